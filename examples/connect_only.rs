//! The floor for a run's cost (bench/cpu): a program that does nothing but start, connect to
//! each address given on the command line once, concurrently, on one tokio thread, and exit.
//! A run of nftables-failover that finds nothing changed does this plus reading its files,
//! counting, rendering and comparing.
//!
//!     connect_only PORT ADDRESS...

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .and_then(|p| p.parse().ok())
        .expect("PORT first");
    let targets: Vec<SocketAddr> = args
        .map(|a| SocketAddr::new(a.parse::<IpAddr>().expect("an address"), port))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let up = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for target in targets {
            tasks.spawn(async move {
                let connect = tokio::net::TcpStream::connect(target);
                matches!(
                    tokio::time::timeout(Duration::from_secs(2), connect).await,
                    Ok(Ok(_))
                )
            });
        }
        let mut up = 0;
        while let Some(done) = tasks.join_next().await {
            up += usize::from(done.unwrap_or(false));
        }
        up
    });
    println!("{up} up");
}
