//! The control API server: HTTP/1.1 + JSON on `RUN/control.sock` (routes in
//! `vnet_model::types`, described by `docs/openapi.yaml`). Each handler is one
//! command to the data plane.

use std::fmt::Write as _;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use vnet_io::{ControlError, ErrorKind, Handle};
use vnet_model::{
    ApiError, DhcpSpec, ForwardProto, MacAddr, NetworkSpec, PortSpec, Reservation, UplinkSpec,
    Version, VlanMode,
};

/// Every error the API returns: a status and `{"error": "..."}`.
pub struct HttpError(StatusCode, String);

impl From<ControlError> for HttpError {
    fn from(e: ControlError) -> Self {
        let status = match e.kind() {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        };
        HttpError(status, e.message())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

type Result<T> = std::result::Result<T, HttpError>;

pub fn router(handle: Handle) -> Router {
    Router::new()
        .route("/v1/version", get(version))
        .route("/v1/networks", get(networks).post(create_network))
        .route("/v1/networks/{net}", get(network).delete(delete_network))
        .route("/v1/networks/{net}/ports", get(ports).post(add_port))
        .route(
            "/v1/networks/{net}/ports/{id}",
            get(port).delete(remove_port),
        )
        .route("/v1/networks/{net}/ports/{id}/vlan", put(set_port_vlan))
        .route(
            "/v1/networks/{net}/uplink",
            put(set_uplink).delete(remove_uplink),
        )
        .route("/v1/networks/{net}/macs", get(macs))
        .route("/v1/networks/{net}/leases", get(leases))
        .route("/v1/networks/{net}/dhcp", put(set_dhcp))
        .route(
            "/v1/networks/{net}/dhcp/reservations",
            post(add_reservation),
        )
        .route(
            "/v1/networks/{net}/dhcp/reservations/{mac}",
            delete(remove_reservation),
        )
        .route(
            "/v1/networks/{net}/forwards",
            get(forwards).post(add_forward),
        )
        .route("/v1/networks/{net}/forwards/{host}", delete(remove_forward))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            HttpError(
                StatusCode::NOT_FOUND,
                "no such route: see docs/openapi.yaml".to_string(),
            )
        })
        .with_state(handle)
}

async fn version() -> Json<Version> {
    Json(Version {
        version: env!("CARGO_PKG_VERSION").to_string(),
        api: "v1".to_string(),
    })
}

async fn networks(State(h): State<Handle>) -> Result<impl IntoResponse> {
    Ok(Json(h.networks().await?))
}

async fn create_network(
    State(h): State<Handle>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse> {
    let spec: NetworkSpec = parse_body(&body)?;
    Ok((StatusCode::CREATED, Json(h.create_network(spec).await?)))
}

async fn network(State(h): State<Handle>, Path(net): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(h.network(net).await?))
}

async fn delete_network(
    State(h): State<Handle>,
    Path(net): Path<String>,
) -> Result<impl IntoResponse> {
    h.delete_network(net).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn ports(State(h): State<Handle>, Path(net): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(h.ports(net).await?))
}

async fn add_port(
    State(h): State<Handle>,
    Path(net): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse> {
    let spec: PortSpec = parse_body(&body)?;
    Ok((StatusCode::CREATED, Json(h.add_port(net, spec).await?)))
}

async fn port(
    State(h): State<Handle>,
    Path((net, id)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    Ok(Json(h.port(net, port_id(&id)?).await?))
}

async fn remove_port(
    State(h): State<Handle>,
    Path((net, id)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    h.remove_port(net, port_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_port_vlan(
    State(h): State<Handle>,
    Path((net, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse> {
    let mode: VlanMode = parse_body(&body)?;
    Ok(Json(h.set_port_vlan(net, port_id(&id)?, mode).await?))
}

async fn set_uplink(
    State(h): State<Handle>,
    Path(net): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse> {
    let spec: UplinkSpec = parse_body(&body)?;
    Ok(Json(h.set_uplink(net, spec).await?))
}

async fn remove_uplink(
    State(h): State<Handle>,
    Path(net): Path<String>,
) -> Result<impl IntoResponse> {
    h.remove_uplink(net).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn macs(State(h): State<Handle>, Path(net): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(h.macs(net).await?))
}

async fn leases(State(h): State<Handle>, Path(net): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(h.leases(net).await?))
}

async fn set_dhcp(
    State(h): State<Handle>,
    Path(net): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse> {
    let spec: DhcpSpec = parse_body(&body)?;
    Ok(Json(h.set_dhcp(net, spec).await?))
}

async fn add_reservation(
    State(h): State<Handle>,
    Path(net): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse> {
    let r: Reservation = parse_body(&body)?;
    Ok((StatusCode::CREATED, Json(h.add_reservation(net, r).await?)))
}

async fn forwards(State(h): State<Handle>, Path(net): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(h.forwards(net).await?))
}
async fn add_forward(
    State(h): State<Handle>,
    Path(net): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse> {
    let f: vnet_model::ForwardSpec = parse_body(&body)?;
    Ok((StatusCode::CREATED, Json(h.add_forward(net, f).await?)))
}
async fn remove_forward(
    State(h): State<Handle>,
    Path((net, host)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<impl IntoResponse> {
    let host: std::net::SocketAddrV4 = host.parse().map_err(|_| {
        HttpError(
            StatusCode::BAD_REQUEST,
            format!("{host:?} is not an IPv4 address and port, e.g. 127.0.0.1:8080"),
        )
    })?;
    let proto = forward_proto(query.as_deref())?;
    h.remove_forward(net, proto, host).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The protocol a forward's URL names: `?proto=tcp` (the default) or `?proto=udp`.
/// Anything else is refused rather than ignored, so a typo cannot remove the wrong
/// forward.
fn forward_proto(query: Option<&str>) -> Result<ForwardProto> {
    let mut proto = ForwardProto::Tcp;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        proto = match pair {
            "proto=tcp" => ForwardProto::Tcp,
            "proto=udp" => ForwardProto::Udp,
            _ => {
                return Err(HttpError(
                    StatusCode::BAD_REQUEST,
                    format!("unknown query {pair:?}: expected proto=tcp or proto=udp"),
                ))
            }
        };
    }
    Ok(proto)
}
async fn remove_reservation(
    State(h): State<Handle>,
    Path((net, mac)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    let mac: MacAddr = mac
        .parse()
        .map_err(|e: vnet_core::wire::ethernet::ParseMacError| {
            HttpError(StatusCode::BAD_REQUEST, e.to_string())
        })?;
    h.remove_reservation(net, mac).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A metric name, its help text and how to read it from a port's counters.
type Series = (&'static str, &'static str, fn(&vnet_model::Counters) -> u64);

/// Per-port and per-NAT-device counters in the Prometheus text format.
async fn metrics(State(h): State<Handle>) -> Result<impl IntoResponse> {
    let mut out = String::new();
    let mut rows = Vec::new();
    for net in h.networks().await? {
        let ports = h.ports(net.name.clone()).await?;
        rows.push((net, ports));
    }
    let series: [Series; 4] = [
        (
            "vnet_port_rx_frames_total",
            "Frames the port sent into its vnet.",
            |c| c.rx_frames,
        ),
        (
            "vnet_port_rx_bytes_total",
            "Bytes the port sent into its vnet.",
            |c| c.rx_bytes,
        ),
        (
            "vnet_port_tx_frames_total",
            "Frames the vnet delivered to the port.",
            |c| c.tx_frames,
        ),
        (
            "vnet_port_tx_bytes_total",
            "Bytes the vnet delivered to the port.",
            |c| c.tx_bytes,
        ),
    ];
    for (name, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (net, ports) in &rows {
            for p in ports {
                let _ = writeln!(
                    out,
                    "{name}{{net=\"{}\",port=\"{}\",kind=\"{}\"}} {}",
                    net.name,
                    p.id,
                    p.kind.as_str(),
                    value(&p.counters)
                );
            }
        }
    }
    let name = "vnet_port_drops_total";
    let _ = writeln!(
        out,
        "# HELP {name} Frames dropped at the port, by cause.\n# TYPE {name} counter"
    );
    for (net, ports) in &rows {
        for p in ports {
            for (cause, n) in &p.counters.drops {
                let _ = writeln!(
                    out,
                    "{name}{{net=\"{}\",port=\"{}\",cause=\"{cause}\"}} {n}",
                    net.name, p.id
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP vnet_macs Learned and declared MAC addresses.\n# TYPE vnet_macs gauge"
    );
    for (net, _) in &rows {
        let _ = writeln!(out, "vnet_macs{{net=\"{}\"}} {}", net.name, net.macs);
    }
    let nats: Vec<_> = rows
        .iter()
        .filter_map(|(net, _)| Some((&net.name, net.nat.as_ref()?)))
        .map(|(net, nat)| (net, nat.flows, nat.counters.fields()))
        .collect();
    let fields = vnet_model::NatCounters::default().fields();
    for (i, (field, help, _)) in fields.iter().enumerate() {
        let name = format!("vnet_nat_{field}_total");
        let _ = writeln!(
            out,
            "# HELP {name} NAT device: {help}\n# TYPE {name} counter"
        );
        for (net, _, counters) in &nats {
            let _ = writeln!(out, "{name}{{net=\"{net}\"}} {}", counters[i].2);
        }
    }
    let _ = writeln!(
        out,
        "# HELP vnet_nat_flows Flows (host sockets) the NAT device has open.\n# TYPE vnet_nat_flows gauge"
    );
    for (net, flows, _) in &nats {
        let _ = writeln!(out, "vnet_nat_flows{{net=\"{net}\"}} {flows}");
    }
    Ok(([("content-type", "text/plain; version=0.0.4")], out))
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        HttpError(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })
}

fn port_id(text: &str) -> Result<u32> {
    text.parse().map_err(|_| {
        HttpError(
            StatusCode::BAD_REQUEST,
            format!("invalid port id {text:?}: expected a number"),
        )
    })
}
