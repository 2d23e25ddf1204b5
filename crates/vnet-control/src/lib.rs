//! A client for the vnet control API (`RUN/control.sock`, HTTP/1.1 + JSON, versioned
//! under `/v1`), used by the CLI and the tests.
//!
//! The request and response bodies are [`vnet_model`]'s, re-exported here so callers
//! need one import; `docs/openapi.yaml` describes the routes; [`client::Client`] calls
//! them.
#![forbid(unsafe_code)]

pub mod client;

pub use vnet_model::*;
