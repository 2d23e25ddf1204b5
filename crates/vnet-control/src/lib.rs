//! The vnet control API (`RUN/control.sock`, HTTP/1.1 + JSON, versioned under `/v1`).
//!
//! [`types`] are the request and response bodies shared by the daemon and its clients;
//! `docs/openapi.yaml` describes the routes; [`client::Client`] calls them.

pub mod client;
pub mod types;

pub use types::*;

/// Path prefix of this version of the API.
pub const API_PREFIX: &str = "/v1";
