//! nftables-failover: keeps nftables `define`s pointed at the first healthy candidate.
//!
//! Pure logic — [`config`], [`select`], [`render`] — is kept apart from effects — [`probe`]
//! (network), [`apply`] (files), [`command`] (nft, sudo, reload) — and [`run`] ties one run together.

pub mod apply;
pub mod cli;
pub mod command;
pub mod config;
pub mod jsonc;
pub mod log;
pub mod probe;
pub mod render;
pub mod run;
pub mod select;
