//! nftables-failover: keeps nftables `define`s pointed at the first healthy candidate.
//!
//! The modules stand on floors, and imports only point down (`tests/layers.rs` checks it):
//!
//! ```text
//! a loop            watch: the one-shot run again on kernel events and every interval
//! entry points      run (the timer's one-shot), status, drain, check_config
//!                   ← cli (the command line)
//! check and decide  evaluate: probe → select → render, for a run and for status
//! features          probe, apply, state, conntrack, publish, ownership, netlink
//!                   (effects; none uses another)
//! primitives        files, command, signals, log, clock       (effects)
//! pure logic        policy, select, render, describe, standby, links
//! ground floor      model (results, choices, state records), config, jsonc, text
//! ```
//!
//! Pure floors do no I/O and take the time as a parameter; everything that touches the network,
//! files, processes or the clock sits above them. docs/architecture.md walks through one run.

pub mod apply;
pub mod check_config;
pub mod cli;
pub mod clock;
pub mod command;
pub mod config;
pub mod conntrack;
pub mod describe;
pub mod drain;
pub mod drains;
pub mod evaluate;
pub mod files;
pub mod jsonc;
pub mod links;
pub mod log;
pub mod model;
pub mod netlink;
pub mod options;
pub mod ownership;
pub mod policy;
pub mod probe;
pub mod publish;
pub mod render;
pub mod run;
pub mod runtime;
pub mod select;
pub mod signals;
pub mod standby;
pub mod state;
pub mod status;
pub mod text;
pub mod watch;
