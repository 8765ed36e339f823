//! nftables-failover: keeps nftables `define`s pointed at the first healthy candidate.
//!
//! Pure logic — [`config`], [`policy`], [`select`], [`render`] — is kept apart from effects —
//! [`probe`] (network), [`files`], [`apply`] and [`state`] (files), [`command`] (nft, sudo,
//! reload). [`evaluate`] is the check-count-pick-render step shared by [`run`] (the timer's
//! one-shot) and [`status`].

pub mod apply;
pub mod cli;
pub mod command;
pub mod config;
pub mod conntrack;
pub mod evaluate;
pub mod files;
pub mod jsonc;
pub mod log;
pub mod policy;
pub mod probe;
pub mod publish;
pub mod render;
pub mod run;
pub mod select;
pub mod signals;
pub mod state;
pub mod status;
