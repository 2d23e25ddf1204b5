//! The control API server: HTTP/1.1 + JSON on `RUN/control.sock` (routes in
//! `vnet_model::types`, described by `docs/openapi.yaml`). Each handler is one
//! command to the data plane, after [`authorize`] checked the client's role
//! (`crate::access`).

use std::fmt::Write as _;
use std::sync::Arc;

use crate::access::{self, Peer, Policy, Role};
use crate::live::Live;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRef, MatchedPath, Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::Extension;
use axum::{Json, Router};
use vnet_io::{ControlError, ErrorKind, Handle};
use vnet_model::policy::acl::{AclAction, AclDirection, AclError, AclInsert, AclReport, AclSpec};
use vnet_model::{
    ApiError, DhcpPatch, DhcpSpec, ForwardProto, MacAddr, NetworkSpec, PolicyPatch, PortSpec,
    Reservation, UplinkSpec, Version, VlanMode,
};

/// Every error the API returns: a status and `{"error": "..."}`.
#[derive(Debug)]
pub struct HttpError(pub(crate) StatusCode, pub(crate) String);

impl From<ControlError> for HttpError {
    fn from(e: ControlError) -> Self {
        HttpError(status_of(e.kind()), e.message())
    }
}

fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Stopped => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

type Result<T> = std::result::Result<T, HttpError>;

/// What every handler may reach: the data plane, the access policy, and what vnetd
/// saves (who added which port among it).
#[derive(Clone)]
pub struct Api {
    handle: Handle,
    policy: Arc<Policy>,
    live: Arc<Live>,
}

impl FromRef<Api> for Handle {
    fn from_ref(api: &Api) -> Handle {
        api.handle.clone()
    }
}

/// The client of one control connection, as the kernel recorded it (`None`: it would
/// not say, and the client has no role).
#[derive(Clone, Debug)]
pub struct Client(pub Option<Peer>);

/// The client of this request and its role; handlers that decide more than the route
/// (adding and removing ports) read it.
#[derive(Clone, Debug)]
struct Caller {
    peer: Option<Peer>,
    role: Role,
}

impl Caller {
    fn uid(&self) -> Option<u32> {
        self.peer.as_ref().map(|p| p.uid)
    }
}

/// Lets the request through if the client's role may use the route
/// ([`access::rule`]), else answers 403 naming the role needed.
async fn authorize(
    State(api): State<Api>,
    ConnectInfo(Client(peer)): ConnectInfo<Client>,
    route: MatchedPath,
    mut request: Request,
    next: Next,
) -> Response {
    let role = peer.as_ref().map_or(Role::None, |p| api.policy.role(p));
    let rule = access::rule(request.method(), route.as_str());
    if role < rule.need {
        let message = api
            .policy
            .refusal(peer.as_ref(), role, rule.need, rule.action);
        tracing::info!("refused {} {}: {message}", request.method(), request.uri());
        return HttpError(StatusCode::FORBIDDEN, message).into_response();
    }
    request.extensions_mut().insert(Caller { peer, role });
    next.run(request).await
}

impl Api {
    fn refuse(&self, caller: &Caller, action: &str) -> HttpError {
        let message = self
            .policy
            .refusal(caller.peer.as_ref(), caller.role, Role::Admin, action);
        HttpError(StatusCode::FORBIDDEN, message)
    }
}

/// After a change answered with success, saves the running vnets before the answer
/// leaves (`crate::live`): a change answered OK survives a crash right after it. If the
/// save fails the change stands but the answer says it was not saved.
async fn persist(State(api): State<Api>, request: Request, next: Next) -> Response {
    let changes = !matches!(request.method().as_str(), "GET" | "HEAD");
    let response = next.run(request).await;
    if !changes || !response.status().is_success() {
        return response;
    }
    match api.live.save().await {
        Ok(()) => response,
        Err(e) => {
            let message = format!("done, but not saved (it will not survive a restart): {e:#}");
            tracing::error!("{message}");
            HttpError(StatusCode::INTERNAL_SERVER_ERROR, message).into_response()
        }
    }
}

/// The control API; serve it with [`serve`], which gives every request its client's
/// credentials.
pub fn router(handle: Handle, policy: Policy, live: Arc<Live>) -> Router {
    let api = Api {
        handle,
        policy: Arc::new(policy),
        live,
    };
    Router::new()
        .route("/v1/version", get(version))
        .route("/v1/config", get(export_config))
        .route("/v1/reload", post(reload))
        .route("/v1/networks", get(networks).post(create_network))
        .route("/v1/networks/{net}", get(network).delete(delete_network))
        .route("/v1/networks/{net}/ports", get(ports).post(add_port))
        .route(
            "/v1/networks/{net}/ports/{id}",
            get(port).delete(remove_port),
        )
        .route("/v1/networks/{net}/ports/{id}/vlan", put(set_port_vlan))
        .route(
            "/v1/networks/{net}/ports/{id}/policy",
            patch(set_port_policy),
        )
        .route(
            "/v1/networks/{net}/policy",
            get(vnet_policy).merge(patch(set_vnet_policy)),
        )
        .route("/v1/networks/{net}/mirrors", get(mirrors).post(add_mirror))
        .route("/v1/networks/{net}/mirrors/{name}", delete(remove_mirror))
        .route("/v1/networks/{net}/ports/{id}/acl", get(port_acl))
        .route(
            "/v1/networks/{net}/ports/{id}/acl/{dir}",
            post(add_acl_rule),
        )
        .route(
            "/v1/networks/{net}/ports/{id}/acl/{dir}/default",
            put(set_acl_default),
        )
        .route(
            "/v1/networks/{net}/ports/{id}/acl/{dir}/{n}",
            delete(remove_acl_rule),
        )
        .route(
            "/v1/networks/{net}/uplink",
            put(set_uplink).delete(remove_uplink),
        )
        .route("/v1/networks/{net}/uplink/remotes", post(add_remote))
        .route(
            "/v1/networks/{net}/uplink/remotes/{addr}",
            delete(remove_remote),
        )
        .route("/v1/networks/{net}/fdb", get(fdb).post(add_fdb))
        .route("/v1/networks/{net}/fdb/{mac}", delete(remove_fdb))
        .route("/v1/networks/{net}/macs", get(macs))
        .route("/v1/networks/{net}/capture", get(capture))
        .route("/v1/networks/{net}/leases", get(leases))
        .route(
            "/v1/networks/{net}/dhcp",
            put(set_dhcp).merge(patch(patch_dhcp)),
        )
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
        .route_layer(axum::middleware::from_fn_with_state(api.clone(), persist))
        .route_layer(axum::middleware::from_fn_with_state(api.clone(), authorize))
        .fallback(|| async {
            HttpError(
                StatusCode::NOT_FOUND,
                "no such route: see docs/openapi.yaml".to_string(),
            )
        })
        .with_state(api)
}

async fn version() -> Json<Version> {
    Json(Version {
        version: env!("CARGO_PKG_VERSION").to_string(),
        api: "v1".to_string(),
    })
}

/// The running configuration as a config file.
async fn export_config(State(api): State<Api>) -> Result<impl IntoResponse> {
    let text = api.live.export().await?;
    Ok(([("content-type", "application/toml")], text))
}

/// Re-reads the config file and applies what changed in it.
async fn reload(State(api): State<Api>) -> Result<impl IntoResponse> {
    match api.live.reload().await {
        Ok(changes) => Ok(Json(vnet_model::Reloaded { changes })),
        Err(e) => {
            tracing::warn!("reload refused: {}", e.message);
            Err(HttpError(status_of(e.kind), e.message))
        }
    }
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
    State(api): State<Api>,
    Path(net): Path<String>,
) -> Result<impl IntoResponse> {
    api.handle.delete_network(net.clone()).await?;
    api.live.net_deleted(&net);
    Ok(StatusCode::NO_CONTENT)
}

async fn ports(State(h): State<Handle>, Path(net): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(h.ports(net).await?))
}

async fn add_port(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(net): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse> {
    let spec: PortSpec = parse_body(&body)?;
    if let Some(action) = Policy::check_port(&spec).filter(|_| caller.role < Role::Admin) {
        return Err(api.refuse(&caller, action));
    }
    // The port is the caller's uid's; the caller's process is not its client.
    let by = caller.peer.as_ref().map(|p| vnet_io::admission::Requester {
        client: vnet_io::admission::Client {
            uid: p.uid,
            gid: p.gid,
            pid: None,
            groups: Some(p.groups.clone()),
        },
        admin: caller.role >= Role::Admin,
    });
    let port = api.handle.add_port(net.clone(), spec.clone(), by).await?;
    api.live.port_added(&net, port.id, &spec, caller.uid());
    Ok((StatusCode::CREATED, Json(port)))
}

async fn port(
    State(h): State<Handle>,
    Path((net, id)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    Ok(Json(h.port(net, port_id(&id)?).await?))
}

async fn remove_port(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path((net, id)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    let id = port_id(&id)?;
    let owner = api.live.owner(&net, id);
    if caller.role < Role::Admin && (owner.is_none() || owner != caller.uid()) {
        let action = format!("removing port {id} of {net}, which you did not add,");
        return Err(api.refuse(&caller, &action));
    }
    api.handle.remove_port(net.clone(), id).await?;
    api.live.port_removed(&net, id);
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

async fn set_port_policy(
    State(h): State<Handle>,
    Path((net, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse> {
    let patch: PolicyPatch = parse_body(&body)?;
    Ok(Json(h.set_port_policy(net, port_id(&id)?, patch).await?))
}

/// A port's filters as they apply to it, with their counters (no rules, all allowed,
/// when it has none).
fn acl_of(port: vnet_model::PortInfo) -> AclReport {
    port.policy_counters.and_then(|r| r.acl).unwrap_or_default()
}

fn acl_direction(text: &str) -> Result<AclDirection> {
    text.parse()
        .map_err(|e: AclError| HttpError(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn port_acl(
    State(h): State<Handle>,
    Path((net, id)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    Ok(Json(acl_of(h.port(net, port_id(&id)?).await?)))
}

async fn add_acl_rule(
    State(h): State<Handle>,
    Path((net, id, dir)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse> {
    let (id, dir) = (port_id(&id)?, acl_direction(&dir)?);
    let AclInsert { rule, position } = parse_body(&body)?;
    let edit = Box::new(move |acl: &mut AclSpec| acl.insert(dir, rule, position));
    let port = h.edit_port_acl(net, id, edit).await?;
    Ok((StatusCode::CREATED, Json(acl_of(port))))
}

async fn remove_acl_rule(
    State(h): State<Handle>,
    Path((net, id, dir, n)): Path<(String, String, String, String)>,
) -> Result<impl IntoResponse> {
    let (id, dir) = (port_id(&id)?, acl_direction(&dir)?);
    let n: usize = n.parse().map_err(|_| {
        HttpError(
            StatusCode::BAD_REQUEST,
            format!("invalid rule number {n:?}: expected a number (1 = the first rule)"),
        )
    })?;
    let edit = Box::new(move |acl: &mut AclSpec| acl.remove(dir, n).map(drop));
    h.edit_port_acl(net, id, edit).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_acl_default(
    State(h): State<Handle>,
    Path((net, id, dir)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse> {
    let (id, dir) = (port_id(&id)?, acl_direction(&dir)?);
    let action: AclAction = parse_body(&body)?;
    let edit = Box::new(move |acl: &mut AclSpec| {
        *acl.default_mut(dir) = action;
        Ok(())
    });
    Ok(Json(acl_of(h.edit_port_acl(net, id, edit).await?)))
}

async fn vnet_policy(
    State(h): State<Handle>,
    Path(net): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(h.spec(net).await?.policy))
}

async fn set_vnet_policy(
    State(h): State<Handle>,
    Path(net): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse> {
    let patch: PolicyPatch = parse_body(&body)?;
    // The sections it sets, checked before any is applied.
    vnet_model::PortPolicy::default()
        .patched(&patch)
        .validate()
        .map_err(|e| HttpError(StatusCode::BAD_REQUEST, format!("policy: {e}")))?;
    Ok(Json(h.set_policy(net, patch).await?))
}

async fn mirrors(State(h): State<Handle>, Path(net): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(h.mirrors(net).await?))
}

async fn add_mirror(
    State(h): State<Handle>,
    Path(net): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse> {
    let spec: vnet_model::MirrorSpec = parse_body(&body)?;
    Ok((StatusCode::CREATED, Json(h.add_mirror(net, spec).await?)))
}

async fn remove_mirror(
    State(h): State<Handle>,
    Path((net, name)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    h.remove_mirror(net, name).await?;
    Ok(StatusCode::NO_CONTENT)
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

async fn add_remote(
    State(h): State<Handle>,
    Path(net): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse> {
    let r: vnet_model::RemoteSpec = parse_body(&body)?;
    Ok((
        StatusCode::CREATED,
        Json(h.add_remote(net, r.address).await?),
    ))
}

async fn remove_remote(
    State(h): State<Handle>,
    Path((net, addr)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    let addr: std::net::IpAddr = addr.parse().map_err(|_| {
        HttpError(
            StatusCode::BAD_REQUEST,
            format!("{addr:?} is not an IP address, e.g. 192.0.2.7 or 2001:db8::7"),
        )
    })?;
    h.remove_remote(net, addr).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn fdb(State(h): State<Handle>, Path(net): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(h.fdb(net).await?))
}

async fn add_fdb(
    State(h): State<Handle>,
    Path(net): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse> {
    let entry: vnet_model::FdbSpec = parse_body(&body)?;
    Ok((StatusCode::CREATED, Json(h.add_fdb(net, entry).await?)))
}

async fn remove_fdb(
    State(h): State<Handle>,
    Path((net, mac)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    h.remove_fdb(net, mac_param(&mac)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A MAC address from a URL.
fn mac_param(mac: &str) -> Result<MacAddr> {
    mac.parse()
        .map_err(|e: vnet_core::wire::ethernet::ParseMacError| {
            HttpError(StatusCode::BAD_REQUEST, e.to_string())
        })
}

async fn capture(
    State(h): State<Handle>,
    Path(net): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let q = crate::capture::Query::parse(query.as_deref())?;
    let snaplen = q.spec.snaplen;
    let capture = h.capture(net, q.spec).await?;
    Ok(crate::capture::response(capture, snaplen, q.count))
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

/// Changes only the settings the body names, in one data-plane step (see [`DhcpPatch`]).
async fn patch_dhcp(
    State(h): State<Handle>,
    Path(net): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse> {
    let patch: DhcpPatch = parse_body(&body)?;
    Ok(Json(h.patch_dhcp(net, patch).await?))
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
    let host: std::net::SocketAddr = host.parse().map_err(|_| {
        HttpError(
            StatusCode::BAD_REQUEST,
            format!("{host:?} is not an address and port, e.g. 127.0.0.1:8080 or [::1]:8080"),
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
    h.remove_reservation(net, mac_param(&mac)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A VXLAN remote's metric: name, help, and how to read it.
type RemoteSeries = (
    &'static str,
    &'static str,
    fn(&vnet_model::RemoteInfo) -> u64,
);

/// Per-remote counters of VXLAN uplinks, and their sockets' drops by cause.
fn vxlan_metrics(out: &mut String, rows: &[(vnet_model::NetworkInfo, Vec<vnet_model::PortInfo>)]) {
    let tunnels: Vec<_> = rows
        .iter()
        .flat_map(|(net, ports)| {
            ports
                .iter()
                .filter_map(move |p| Some((&net.name, p.vxlan.as_ref()?)))
        })
        .collect();
    let series: [RemoteSeries; 5] = [
        (
            "rx_frames",
            "Frames that arrived from the remote VTEP.",
            |r| r.rx_frames,
        ),
        (
            "rx_bytes",
            "Bytes that arrived from the remote VTEP.",
            |r| r.rx_bytes,
        ),
        ("tx_frames", "Frames sent to the remote VTEP.", |r| {
            r.tx_frames
        }),
        ("tx_bytes", "Bytes sent to the remote VTEP.", |r| r.tx_bytes),
        (
            "drops",
            "Datagrams from or to the remote VTEP that were dropped.",
            |r| r.drops,
        ),
    ];
    for (field, help, value) in series {
        let name = format!("vnet_vxlan_remote_{field}_total");
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (net, vx) in &tunnels {
            for r in &vx.remotes {
                let _ = writeln!(
                    out,
                    "{name}{{net=\"{net}\",vni=\"{}\",remote=\"{}\"}} {}",
                    vx.vni,
                    r.address,
                    value(r)
                );
            }
        }
    }
    let name = "vnet_vxlan_socket_drops_total";
    let _ = writeln!(
        out,
        "# HELP {name} Datagrams a VXLAN socket dropped before any vnet, by cause.\n# TYPE {name} counter"
    );
    let mut seen = std::collections::BTreeSet::new();
    for (_, vx) in &tunnels {
        if !seen.insert(&vx.socket) {
            continue;
        }
        for (cause, n) in &vx.socket_drops {
            let _ = writeln!(
                out,
                "{name}{{socket=\"{}\",cause=\"{cause}\"}} {n}",
                vx.socket
            );
        }
    }
}

/// A metric name, its help text and how to read it from a port's counters.
type Series = (&'static str, &'static str, fn(&vnet_model::Counters) -> u64);

/// Per-port and per-NAT-device counters in the Prometheus text format.
/// Each port's filters: frames and bytes per rule (`rule="N"`, 1 for the first of its
/// direction, or `"default"`), and the connection table's size.
fn acl_metrics(out: &mut String, rows: &[(vnet_model::NetworkInfo, Vec<vnet_model::PortInfo>)]) {
    let acls: Vec<(&str, u32, &AclReport)> = rows
        .iter()
        .flat_map(|(net, ports)| ports.iter().map(move |p| (net.name.as_str(), p)))
        .filter_map(|(net, p)| Some((net, p.id, p.policy_counters.as_ref()?.acl.as_ref()?)))
        .collect();
    if acls.is_empty() {
        return;
    }
    for (name, help, bytes) in [
        (
            "vnet_acl_frames_total",
            "Frames a port's filter rule (or default) decided.",
            false,
        ),
        (
            "vnet_acl_bytes_total",
            "Bytes a port's filter rule (or default) decided.",
            true,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (net, port, acl) in &acls {
            for (dir, chain) in [("in", &acl.inbound), ("out", &acl.outbound)] {
                let rules = chain.rules.iter().enumerate();
                let counts = rules.map(|(i, r)| ((i + 1).to_string(), r.frames, r.bytes));
                let default = (
                    "default".to_string(),
                    chain.default_frames,
                    chain.default_bytes,
                );
                for (rule, frames, n) in counts.chain([default]) {
                    let value = if bytes { n } else { frames };
                    let _ = writeln!(
                        out,
                        "{name}{{net=\"{net}\",port=\"{port}\",dir=\"{dir}\",rule=\"{rule}\"}} {value}"
                    );
                }
            }
        }
    }
    let name = "vnet_conntrack_entries";
    let _ = writeln!(
        out,
        "# HELP {name} Connections a port's filters track.\n# TYPE {name} gauge"
    );
    for (net, port, acl) in &acls {
        if let Some(ct) = &acl.conntrack {
            let _ = writeln!(
                out,
                "{name}{{net=\"{net}\",port=\"{port}\"}} {}",
                ct.entries
            );
        }
    }
}

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
    acl_metrics(&mut out, &rows);
    vxlan_metrics(&mut out, &rows);
    shaping_metrics(&mut out, &rows);
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
    let dhcps: Vec<_> = rows
        .iter()
        .filter_map(|(net, _)| Some((&net.name, net.dhcp_counters?.fields())))
        .collect();
    for (i, (field, help, _)) in vnet_model::DhcpCounters::default()
        .fields()
        .iter()
        .enumerate()
    {
        let name = format!("vnet_dhcp_{field}_total");
        let _ = writeln!(
            out,
            "# HELP {name} DHCP service: {help}\n# TYPE {name} counter"
        );
        for (net, counters) in &dhcps {
            let _ = writeln!(out, "{name}{{net=\"{net}\"}} {}", counters[i].2);
        }
    }
    let routers: Vec<_> = rows
        .iter()
        .filter_map(|(net, _)| Some((&net.name, net.ipv6.as_ref()?.counters?.fields())))
        .collect();
    let fields = vnet_model::RaCounters::default().fields();
    for (i, (field, help, _)) in fields.iter().enumerate() {
        let name = format!("vnet_ra_{field}_total");
        let _ = writeln!(
            out,
            "# HELP {name} IPv6 router: {help}\n# TYPE {name} counter"
        );
        for (net, counters) in &routers {
            let _ = writeln!(out, "{name}{{net=\"{net}\"}} {}", counters[i].2);
        }
    }
    let mut mirrors = Vec::new();
    for (net, _) in &rows {
        mirrors.push((&net.name, h.mirrors(net.name.clone()).await?));
    }
    write_mirror_metrics(&mut out, &mirrors);
    write_capture_metrics(&mut out, rows.iter().map(|(net, _)| net));
    write_snooping_metrics(&mut out, rows.iter().map(|(net, _)| net));
    let name = "vnet_limit_refusals_total";
    let _ = writeln!(
        out,
        "# HELP {name} Requests refused by a `[limits]` bound, by its key, or by a vnet's allow lists (`allow`).\n# TYPE {name} counter"
    );
    for r in h.limit_refusals() {
        let net = r.net.map(|n| format!("net=\"{n}\","));
        let (net, limit, count) = (net.unwrap_or_default(), r.limit, r.count);
        let _ = writeln!(out, "{name}{{{net}limit=\"{limit}\"}} {count}");
    }
    Ok(([("content-type", "text/plain; version=0.0.4")], out))
}

/// A metric read from a `T`: its name, help text, type and value.
type Metric<T> = (&'static str, &'static str, &'static str, fn(&T) -> u64);

/// Each metric of `metrics` for each row (its labels and what to read it from).
fn write_metrics<T>(out: &mut String, metrics: &[Metric<T>], rows: &[(String, &T)]) {
    for (name, help, kind, value) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, row) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {}", value(row));
        }
    }
}

/// What ports' rate and impairment sections hold and did (`PortInfo.policy_counters`):
/// a series per figure, a row per port that has the section.
fn shaping_metrics(
    out: &mut String,
    rows: &[(vnet_model::NetworkInfo, Vec<vnet_model::PortInfo>)],
) {
    use std::fmt::Write;
    type Figure = fn(&vnet_model::PolicyReport) -> Option<u64>;
    let series: [(&str, &str, &str, Figure); 5] = [
        (
            "vnet_port_shaped_frames",
            "Frames a port's egress rate holds now.",
            "gauge",
            |r| r.rate.as_ref().map(|x| x.held_frames),
        ),
        (
            "vnet_port_delayed_frames",
            "Frames a port's impairment holds for their delay now.",
            "gauge",
            |r| r.impair.as_ref().map(|x| x.held_frames),
        ),
        (
            "vnet_port_duplicated_total",
            "Frames a port's impairment sent twice.",
            "counter",
            |r| r.impair.as_ref().map(|x| x.duplicated),
        ),
        (
            "vnet_port_corrupted_total",
            "Frames a port's impairment corrupted.",
            "counter",
            |r| r.impair.as_ref().map(|x| x.corrupted),
        ),
        (
            "vnet_port_reordered_total",
            "Frames a port's impairment sent ahead of delayed ones.",
            "counter",
            |r| r.impair.as_ref().map(|x| x.reordered),
        ),
    ];
    for (name, help, kind, figure) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (net, ports) in rows {
            for p in ports {
                if let Some(v) = p.policy_counters.as_ref().and_then(figure) {
                    let _ = writeln!(out, "{name}{{net=\"{}\",port=\"{}\"}} {v}", net.name, p.id);
                }
            }
        }
    }
}

/// Per-mirror counters and whether each mirror is active.
fn write_mirror_metrics(out: &mut String, mirrors: &[(&String, Vec<vnet_model::MirrorInfo>)]) {
    let metrics: [Metric<vnet_model::MirrorInfo>; 4] = [
        (
            "vnet_mirror_active",
            "Whether the mirror copies (1) or waits for a port (0).",
            "gauge",
            |m| u64::from(m.state == vnet_model::MirrorState::Active),
        ),
        (
            "vnet_mirror_frames_total",
            "Frames the mirror copied to its destination.",
            "counter",
            |m| m.counters.frames,
        ),
        (
            "vnet_mirror_bytes_total",
            "Bytes the mirror copied to its destination.",
            "counter",
            |m| m.counters.bytes,
        ),
        (
            "vnet_mirror_drops_total",
            "Copies the destination's full queue dropped.",
            "counter",
            |m| m.counters.drops,
        ),
    ];
    let rows: Vec<(String, &vnet_model::MirrorInfo)> = mirrors
        .iter()
        .flat_map(|(net, list)| {
            list.iter()
                .map(move |m| (format!("net=\"{net}\",mirror=\"{}\"", m.name), m))
        })
        .collect();
    write_metrics(out, &metrics, &rows);
}

/// Live captures per vnet: running, frames taken, frames dropped.
fn write_capture_metrics<'a>(
    out: &mut String,
    nets: impl Iterator<Item = &'a vnet_model::NetworkInfo>,
) {
    let metrics: [Metric<vnet_model::CaptureCounters>; 3] = [
        (
            "vnet_captures",
            "Live captures running on the vnet.",
            "gauge",
            |c| c.running as u64,
        ),
        (
            "vnet_capture_frames_total",
            "Frames live captures of the vnet took.",
            "counter",
            |c| c.frames,
        ),
        (
            "vnet_capture_drops_total",
            "Frames live captures of the vnet dropped because their reader was behind.",
            "counter",
            |c| c.dropped,
        ),
    ];
    let rows: Vec<(String, &vnet_model::CaptureCounters)> = nets
        .map(|net| (format!("net=\"{}\"", net.name), &net.captures))
        .collect();
    write_metrics(out, &metrics, &rows);
}

/// IGMP/MLD snooping per vnet: groups, and what it read and delivered.
fn write_snooping_metrics<'a>(
    out: &mut String,
    nets: impl Iterator<Item = &'a vnet_model::NetworkInfo>,
) {
    let metrics: [Metric<vnet_model::SnoopingInfo>; 7] = [
        (
            "vnet_snooping_groups",
            "Multicast groups the vnet forwards by membership.",
            "gauge",
            |s| s.groups.len() as u64,
        ),
        (
            "vnet_snooping_joins_total",
            "Group joins read from IGMP/MLD reports.",
            "counter",
            |s| s.joins,
        ),
        (
            "vnet_snooping_leaves_total",
            "Group leaves read from IGMP/MLD messages.",
            "counter",
            |s| s.leaves,
        ),
        (
            "vnet_snooping_queries_total",
            "IGMP/MLD queries read.",
            "counter",
            |s| s.queries,
        ),
        (
            "vnet_snooping_group_frames_total",
            "Frames to a registered group, delivered to its members and routers only.",
            "counter",
            |s| s.group_frames,
        ),
        (
            "vnet_snooping_unregistered_frames_total",
            "Frames to a group no port joined, flooded.",
            "counter",
            |s| s.unregistered_frames,
        ),
        (
            "vnet_snooping_refused_total",
            "Group joins not kept: the vnet or the port held its most memberships.",
            "counter",
            |s| s.refused,
        ),
    ];
    let rows: Vec<(String, &vnet_model::SnoopingInfo)> = nets
        .map(|net| (format!("net=\"{}\"", net.name), &net.snooping))
        .collect();
    write_metrics(out, &metrics, &rows);
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

/// The `[limits]` keys the control plane enforces, also the `limit` label of
/// `vnet_limit_refusals_total`.
pub const CONTROL_CONNECTIONS: &str = "control_connections";
pub const CONTROL_REQUEST_SECS: &str = "control_request_secs";

/// Serves `router` on `listener` until `shutdown` resolves, then gives open connections
/// up to `grace` to finish. At most `limits.connections` connections are served at once:
/// one more is answered 503 and closed at once. A connection that has not sent a
/// request's line and headers within `limits.request` (counted from its start, or from
/// the end of its previous request), or then its body within as long again, is closed.
/// Both are counted in `handle`'s refusals.
pub async fn serve(
    listener: tokio::net::UnixListener,
    router: Router,
    handle: Handle,
    limits: crate::config::ControlLimits,
    shutdown: impl std::future::Future<Output = ()>,
    grace: std::time::Duration,
) {
    use tokio::sync::{watch, Semaphore};
    let slots_max = limits
        .connections
        .clamp(1, Semaphore::MAX_PERMITS.min(1 << 20));
    let slots = Arc::new(Semaphore::new(slots_max));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, most likely: let some close before retrying.
                    tracing::warn!("accept on control.sock failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                let conn = connection(
                    stream,
                    router.clone(),
                    handle.clone(),
                    limits.request,
                    stop_rx.clone(),
                );
                tokio::spawn(async move {
                    conn.await;
                    drop(slot);
                });
            }
            Err(_) => refuse_connection(&stream, &handle, slots_max),
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every slot back: every connection closed.
    let all = u32::try_from(slots_max).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("control clients still connected after {grace:?}: closing them");
    }
}

/// Answers a connection over `[limits] control_connections` with 503 (best effort: what
/// its socket takes at once) and closes it.
fn refuse_connection(stream: &tokio::net::UnixStream, handle: &Handle, max: usize) {
    let body = serde_json::json!({
        "error": format!(
            "vnetd serves its maximum of {max} control connections: retry later, or raise \
             `[limits] {CONTROL_CONNECTIONS}` in vnetd's configuration"
        )
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
    handle.refuse(CONTROL_CONNECTIONS, "closed a control connection");
}

/// The most a control request's body may hold (axum's default for JSON bodies).
const MAX_BODY: usize = 2 << 20;

/// A request whose body did not arrive within `[limits] control_request_secs`: the
/// connection is closed.
#[derive(Debug, thiserror::Error)]
#[error("request body not received in time")]
struct BodyTimeout;

/// Serves one connection with hyper (HTTP/1.1), each request carrying the client's
/// credentials; once `stop` turns true it finishes the request under way and closes.
async fn connection(
    stream: tokio::net::UnixStream,
    router: Router,
    handle: Handle,
    request: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = Client(Peer::of(&stream));
    let refusals = handle.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (mut router, client, handle) = (router.clone(), client.clone(), refusals.clone());
        async move {
            // The body, like the head, within the request time (and axum's 2 MiB).
            let (mut parts, body) = req.into_parts();
            let read = axum::body::to_bytes(axum::body::Body::new(body), MAX_BODY);
            let body = match tokio::time::timeout(request, read).await {
                Ok(Ok(body)) => body,
                Ok(Err(e)) => {
                    let message = format!("cannot read the request body: {e}");
                    return Ok(HttpError(StatusCode::BAD_REQUEST, message).into_response());
                }
                Err(_) => {
                    handle.refuse(
                        CONTROL_REQUEST_SECS,
                        &format!(
                            "closed a control connection that sent no complete request body \
                             within {} s",
                            request.as_secs()
                        ),
                    );
                    return Err(BodyTimeout);
                }
            };
            parts.extensions.insert(ConnectInfo(client));
            let req = Request::from_parts(parts, axum::body::Body::from(body));
            match tower_service::Service::call(&mut router, req).await {
                Ok(response) => Ok(response),
                Err(never) => match never {},
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(request);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = async { drop(stop.wait_for(|stop| *stop).await) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    match served {
        Err(e) if e.is_timeout() => handle.refuse(
            CONTROL_REQUEST_SECS,
            &format!(
                "closed a control connection that sent no complete request within {} s",
                request.as_secs()
            ),
        ),
        Err(e) => tracing::debug!("control connection: {e}"),
        Ok(()) => {}
    }
}
