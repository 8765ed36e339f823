//! The kernel's view of links and addresses over rtnetlink: a snapshot for a run's checks
//! (see `links`), and a subscription to link, address and route changes for `watch`.
//!
//! Neither needs privilege: any user may dump links and addresses and join the rtnetlink
//! multicast groups (it is what `ip monitor` does unprivileged).

use crate::model::{Link, LinkView, OperState};
use futures_util::stream::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, Prop, State};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, MulticastGroup};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

/// A dump of a few hundred interfaces takes a millisecond; this only bounds a kernel that
/// does not answer.
const DUMP_LIMIT: Duration = Duration::from_secs(2);

/// Links and addresses as the kernel has them now. Must run inside a tokio runtime.
pub async fn snapshot() -> io::Result<LinkView> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    let task = tokio::spawn(connection);
    let view = tokio::time::timeout(DUMP_LIMIT, dump(&handle)).await;
    task.abort();
    match view {
        Ok(Ok((view, _))) => Ok(view),
        Ok(Err(e)) => Err(io::Error::other(format!("rtnetlink dump: {e}"))),
        Err(_) => Err(io::Error::other(format!(
            "rtnetlink dump: no answer within {DUMP_LIMIT:?}"
        ))),
    }
}

/// The view, and the interfaces' names by index (notifications of a removed link name it by
/// index). A link is in the view under its name and each of its alternative names
/// (`ip link property add dev wan1 altname upA`, which udev gives many interfaces): a path
/// may name it either way, as a probe bound to the device may.
async fn dump(handle: &Handle) -> Result<(LinkView, HashMap<u32, Vec<String>>), rtnetlink::Error> {
    let mut view = LinkView::default();
    let mut names = HashMap::new();
    let mut links = handle.link().get().execute();
    while let Some(msg) = links.try_next().await? {
        if let Some((all, link)) = link_of(&msg) {
            for name in &all {
                view.links.insert(name.clone(), link);
            }
            names.insert(msg.header.index, all);
        }
    }
    let mut addresses = handle.address().get().execute();
    while let Some(msg) = addresses.try_next().await? {
        view.addresses.extend(address_of(&msg));
    }
    Ok((view, names))
}

/// The link's names (its name first, then its alternative names) and state.
fn link_of(msg: &LinkMessage) -> Option<(Vec<String>, Link)> {
    let mut name = None;
    let mut alt = Vec::new();
    let mut oper = OperState::Unknown;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::PropList(props) => alt.extend(props.iter().filter_map(|p| match p {
                Prop::AltIfName(n) => Some(n.clone()),
                _ => None,
            })),
            LinkAttribute::OperState(s) => {
                oper = match s {
                    State::Up => OperState::Up,
                    State::Down => OperState::Down,
                    State::LowerLayerDown => OperState::LowerLayerDown,
                    State::NotPresent => OperState::NotPresent,
                    State::Dormant => OperState::Dormant,
                    State::Testing => OperState::Testing,
                    _ => OperState::Unknown,
                }
            }
            _ => {}
        }
    }
    let flags = msg.header.flags;
    let mut names = vec![name?];
    names.extend(alt);
    Some((
        names,
        Link {
            up: flags.contains(LinkFlags::Up),
            carrier: flags.contains(LinkFlags::LowerUp),
            oper,
        },
    ))
}

/// The host's own address in an address message: `IFA_LOCAL` where present (on a
/// point-to-point link such as PPPoE `IFA_ADDRESS` is the peer's), else `IFA_ADDRESS`.
fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    let find = |local: bool| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) if local => Some(*ip),
            AddressAttribute::Address(ip) if !local => Some(*ip),
            _ => None,
        })
    };
    find(true).or_else(|| find(false))
}

/// A change the kernel reported that may change a run's outcome, in words for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub what: String,
    /// The subscription ended (the socket failed): no change will be reported any more.
    pub ended: bool,
}

impl Change {
    fn seen(what: String) -> Change {
        Change { what, ended: false }
    }
}

/// The kernel's link, address and route changes, as [`Subscription::next`] reports them.
pub struct Subscription<S> {
    messages: S,
    handle: Handle,
    known: Known,
    /// The netlink socket's task on the runtime; aborted with the subscription.
    connection: tokio::task::JoinHandle<()>,
}

impl<S> Drop for Subscription<S> {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// Subscribes to link, address and route changes on the process's runtime; returns once
/// subscribed (and the links are known), or why it could not.
pub async fn subscribe()
-> io::Result<Subscription<impl futures_util::Stream<Item = Message> + Unpin>> {
    let groups = [
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ];
    let (connection, handle, messages) = rtnetlink::new_multicast_connection(&groups)?;
    let connection = tokio::spawn(connection);
    // The links as last seen, to tell a state change from a statistics update.
    let known = match tokio::time::timeout(DUMP_LIMIT, dump(&handle)).await {
        Ok(Ok((view, names))) => Known { view, names },
        Ok(Err(e)) => {
            connection.abort();
            return Err(io::Error::other(format!("rtnetlink dump: {e}")));
        }
        Err(_) => {
            connection.abort();
            return Err(io::Error::other("rtnetlink dump: no answer"));
        }
    };
    Ok(Subscription {
        messages,
        handle,
        known,
        connection,
    })
}

type Message = (
    rtnetlink::packet_core::NetlinkMessage<RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
);

impl<S: futures_util::Stream<Item = Message> + Unpin> Subscription<S> {
    /// The next change that matters: a link appearing, disappearing or changing its up,
    /// carrier or operational state (not its statistics or other attributes), any address
    /// added or removed, any route added or removed outside the local table. If the kernel's
    /// buffer overflowed (events lost), that is a change too. `ended` once the socket closed.
    pub async fn next(&mut self) -> Change {
        while let Some((message, _)) = self.messages.next().await {
            let change = match message.payload {
                NetlinkPayload::InnerMessage(msg) => self.known.change(msg),
                NetlinkPayload::Overrun(_) => {
                    if let Ok(Ok((view, names))) =
                        tokio::time::timeout(DUMP_LIMIT, dump(&self.handle)).await
                    {
                        self.known = Known { view, names };
                    }
                    Some("events lost (netlink buffer overrun)".to_string())
                }
                _ => None,
            };
            if let Some(what) = change {
                return Change::seen(what);
            }
        }
        Change {
            what: "the netlink socket closed".into(),
            ended: true,
        }
    }
}

struct Known {
    view: LinkView,
    /// Per link index: its name, then its alternative names.
    names: HashMap<u32, Vec<String>>,
}

impl Known {
    fn change(&mut self, msg: RouteNetlinkMessage) -> Option<String> {
        match msg {
            RouteNetlinkMessage::NewLink(m) => {
                let (all, link) = link_of(&m)?;
                let name = all[0].clone();
                // Names it had and has no more (a rename, an altname deleted) are gone.
                let old = self.names.insert(m.header.index, all.clone());
                for gone in old.iter().flatten().filter(|o| !all.contains(o)) {
                    self.view.links.remove(gone);
                }
                // An alternative name added or deleted changes which paths name a link.
                let renamed = old.is_some_and(|o| o[1..] != all[1..]);
                for alt in &all[1..] {
                    self.view.links.insert(alt.clone(), link);
                }
                let before = self.view.links.insert(name.clone(), link);
                match before {
                    None => Some(format!("interface {name} appeared")),
                    Some(b) if b == link && renamed => Some(format!(
                        "{name}'s alternative names are now: {}",
                        all[1..].join(", ")
                    )),
                    Some(b) if b == link => None,
                    Some(b) if b.carrier && !link.carrier => {
                        Some(format!("carrier lost on {name}"))
                    }
                    Some(b) if !b.carrier && link.carrier => {
                        Some(format!("carrier back on {name}"))
                    }
                    Some(_) => Some(format!("{name} is now {}", describe(&link))),
                }
            }
            RouteNetlinkMessage::DelLink(m) => {
                let all = self
                    .names
                    .remove(&m.header.index)
                    .or_else(|| link_of(&m).map(|(n, _)| n))?;
                for name in &all {
                    self.view.links.remove(name);
                }
                Some(format!("interface {} gone", all[0]))
            }
            RouteNetlinkMessage::NewAddress(m) => {
                let ip = address_of(&m)?;
                self.view.addresses.insert(ip);
                Some(format!("address {ip} added"))
            }
            RouteNetlinkMessage::DelAddress(m) => {
                let ip = address_of(&m)?;
                self.view.addresses.remove(&ip);
                Some(format!("address {ip} removed"))
            }
            RouteNetlinkMessage::NewRoute(m) => route(&m).map(|r| format!("route {r} added")),
            RouteNetlinkMessage::DelRoute(m) => route(&m).map(|r| format!("route {r} removed")),
            _ => None,
        }
    }
}

fn describe(link: &Link) -> String {
    format!(
        "{}, {}, operstate {:?}",
        if link.up { "up" } else { "down" },
        if link.carrier {
            "carrier"
        } else {
            "no carrier"
        },
        link.oper
    )
}

/// A route's destination, or `None` for the local table (the kernel's own routes to the
/// host's addresses, which come and go with the addresses themselves).
fn route(msg: &RouteMessage) -> Option<String> {
    const RT_TABLE_LOCAL: u32 = 255;
    let table = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table));
    if table == RT_TABLE_LOCAL {
        return None;
    }
    let len = msg.header.destination_prefix_length;
    let dest = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(ip.to_string()),
        RouteAttribute::Destination(RouteAddress::Inet6(ip)) => Some(ip.to_string()),
        RouteAttribute::Destination(other) => Some(format!("{other:?}")),
        _ => None,
    });
    Some(match (dest, msg.header.address_family) {
        (Some(d), _) => format!("{d}/{len}"),
        (None, AddressFamily::Inet6) => "::/0".into(),
        (None, _) => "0.0.0.0/0".into(),
    })
}
