//! The `certplane` binary's library: node runner, HTTP API, CLI and the dev cluster. Exposed as a
//! library so cluster tests and benchmarks start the real thing in-process on `127.0.0.1:0`.

pub mod api;
pub mod api_tls;
pub mod cli;
pub mod client;
pub mod config;
pub mod dev;
pub mod server;
pub mod workers;
