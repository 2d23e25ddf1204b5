//! A small blocking client for the control API on `RUN/control.sock`.
//!
//! Each call opens a fresh connection, sends one HTTP/1.1 request and reads the whole
//! answer: the API is for humans and scripts, a connection per call costs nothing next
//! to a person typing. The async machinery (hyper on a tokio current-thread runtime) is
//! private, so the CLI and tests call plain functions. Do not call a [`Client`] from
//! inside another tokio runtime: blocking on it there panics.
//!
//! Errors say which step failed: the daemon could not be reached ([`Error::NotRunning`],
//! [`Error::PermissionDenied`], [`Error::Connect`]), the daemon answered with an error
//! ([`Error::Api`], carrying its status and its `{"error": ...}` message), or the answer
//! did not make sense ([`Error::Decode`], [`Error::Http`]).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use vnet_model::API_PREFIX;
use vnet_model::{
    ApiError, DhcpPatch, DhcpSpec, Lease, MacAddr, MacEntry, NetworkInfo, NetworkSpec, PolicyPatch,
    PortInfo, PortPolicy, PortSpec, Reservation, UplinkSpec, Version, VlanMode,
};

/// How long one request may take, connection included, before the client gives up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Name of the control socket inside the runtime directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// What went wrong talking to vnetd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No socket at the path, or nobody listening on it.
    #[error(
        "vnetd is not running ({}): start `vnetd`, or pass --run-dir (or set VNET_RUN_DIR) to \
         the runtime directory it uses",
        why_unreachable(path, source)
    )]
    NotRunning {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The socket exists but this user may not connect to it.
    #[error(
        "permission denied connecting to vnetd at {}: run as the user vnetd runs as (root for \
         /run/vnet), or pass --run-dir to a daemon of your own",
        path.display()
    )]
    PermissionDenied {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Connecting failed for another reason.
    #[error("cannot connect to vnetd at {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The private async runtime could not be created.
    #[error("cannot start the client's I/O runtime: {0}")]
    Runtime(#[source] io::Error),
    /// The connection broke or the answer was not HTTP.
    #[error("{method} {path}: HTTP exchange with vnetd failed: {source}")]
    Http {
        method: Method,
        path: String,
        #[source]
        source: hyper::Error,
    },
    /// vnetd did not answer in time.
    #[error("{method} {path}: vnetd did not answer within {} s", timeout.as_secs())]
    Timeout {
        method: Method,
        path: String,
        timeout: Duration,
    },
    /// vnetd answered with an error status; `message` is its `{"error": ...}` text.
    #[error("{message} ({status})")]
    Api { status: StatusCode, message: String },
    /// vnetd answered with success but a body this client does not understand.
    #[error("{method} {path}: cannot decode vnetd's answer: {source}")]
    Decode {
        method: Method,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// A streamed answer broke off: vnetd stopped, or the connection failed.
    #[error("{path}: the stream from vnetd broke off: {source}")]
    Broken {
        path: String,
        #[source]
        source: hyper::Error,
    },
    /// Writing a streamed answer failed (not a closed pipe: that ends the stream).
    #[error("cannot write the capture: {0}")]
    Write(#[source] io::Error),
    /// The request body could not be encoded (never happens with the API types).
    #[error("cannot encode the request: {0}")]
    Encode(#[source] serde_json::Error),
}

impl Error {
    /// The HTTP status vnetd answered with, for [`Error::Api`].
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the daemon could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Error::NotRunning { .. } | Error::PermissionDenied { .. } | Error::Connect { .. }
        )
    }
}

/// A whole answer: status and body bytes.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

/// A client of one vnetd, found by its control socket.
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    /// A client of the daemon listening on `socket` (usually `RUN/control.sock`). Nothing
    /// is connected until the first call.
    pub fn new(socket: impl Into<PathBuf>) -> Result<Client, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(Error::Runtime)?;
        Ok(Client {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
            runtime,
        })
    }

    /// A client of the daemon whose runtime directory is `run_dir`.
    pub fn for_run_dir(run_dir: impl AsRef<Path>) -> Result<Client, Error> {
        Client::new(run_dir.as_ref().join(CONTROL_SOCKET))
    }

    /// Give up on a request after `timeout` (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The control socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /v1/version`
    pub fn version(&self) -> Result<Version, Error> {
        self.get_json(&api_path(&["version"]))
    }

    /// `GET /v1/networks`
    pub fn networks(&self) -> Result<Vec<NetworkInfo>, Error> {
        self.get_json(&api_path(&["networks"]))
    }

    /// `GET /v1/networks/{net}`
    pub fn network(&self, net: &str) -> Result<NetworkInfo, Error> {
        self.get_json(&api_path(&["networks", net]))
    }

    /// `POST /v1/networks`
    pub fn create_network(&self, spec: &NetworkSpec) -> Result<NetworkInfo, Error> {
        self.send_json(Method::POST, &api_path(&["networks"]), spec)
    }

    /// `DELETE /v1/networks/{net}`
    pub fn delete_network(&self, net: &str) -> Result<(), Error> {
        self.delete(&api_path(&["networks", net]))
    }

    /// `GET /v1/networks/{net}/ports`
    pub fn ports(&self, net: &str) -> Result<Vec<PortInfo>, Error> {
        self.get_json(&api_path(&["networks", net, "ports"]))
    }

    /// `GET /v1/networks/{net}/ports/{id}`
    pub fn port(&self, net: &str, id: u32) -> Result<PortInfo, Error> {
        self.get_json(&api_path(&["networks", net, "ports", &id.to_string()]))
    }

    /// `POST /v1/networks/{net}/ports`
    pub fn add_port(&self, net: &str, spec: &PortSpec) -> Result<PortInfo, Error> {
        self.send_json(Method::POST, &api_path(&["networks", net, "ports"]), spec)
    }

    /// `DELETE /v1/networks/{net}/ports/{id}`
    pub fn remove_port(&self, net: &str, id: u32) -> Result<(), Error> {
        self.delete(&api_path(&["networks", net, "ports", &id.to_string()]))
    }

    /// `GET /v1/networks/{net}/macs`
    pub fn macs(&self, net: &str) -> Result<Vec<MacEntry>, Error> {
        self.get_json(&api_path(&["networks", net, "macs"]))
    }

    /// `GET /v1/networks/{net}/leases`: the addresses the vnet's DHCP service handed out.
    pub fn leases(&self, net: &str) -> Result<Vec<Lease>, Error> {
        self.get_json(&api_path(&["networks", net, "leases"]))
    }

    /// `PUT /v1/networks/{net}/dhcp`: replace the vnet's DHCP settings (reservations
    /// included) live; starts the service if the vnet had none. Answers the vnet as it is
    /// afterwards.
    pub fn set_dhcp(&self, net: &str, dhcp: &DhcpSpec) -> Result<NetworkInfo, Error> {
        self.send_json(Method::PUT, &api_path(&["networks", net, "dhcp"]), dhcp)
    }

    /// `PATCH /v1/networks/{net}/dhcp`: change only the settings `patch` names, live, in
    /// one step on the daemon's side (reservations, and changes made meanwhile, are
    /// kept); starts the service if the vnet had none. Answers the vnet as it is
    /// afterwards.
    pub fn patch_dhcp(&self, net: &str, patch: &DhcpPatch) -> Result<NetworkInfo, Error> {
        self.send_json(Method::PATCH, &api_path(&["networks", net, "dhcp"]), patch)
    }

    /// `POST /v1/networks/{net}/dhcp/reservations`
    pub fn add_reservation(
        &self,
        net: &str,
        reservation: &Reservation,
    ) -> Result<Reservation, Error> {
        let path = api_path(&["networks", net, "dhcp", "reservations"]);
        self.send_json(Method::POST, &path, reservation)
    }

    /// `DELETE /v1/networks/{net}/dhcp/reservations/{mac}`
    pub fn remove_reservation(&self, net: &str, mac: MacAddr) -> Result<(), Error> {
        let mac = mac.to_string();
        self.delete(&api_path(&["networks", net, "dhcp", "reservations", &mac]))
    }

    /// `PUT /v1/networks/{net}/ports/{id}/vlan`: change a port's VLAN mode live.
    pub fn set_port_vlan(&self, net: &str, id: u32, mode: &VlanMode) -> Result<PortInfo, Error> {
        let path = api_path(&["networks", net, "ports", &id.to_string(), "vlan"]);
        self.send_json(Method::PUT, &path, mode)
    }

    /// `GET /v1/networks/{net}/ports/{id}/acl`: the port's filters as they apply to it
    /// (its own, else its vnet's), with their counters.
    pub fn acl(&self, net: &str, id: u32) -> Result<vnet_model::policy::acl::AclReport, Error> {
        self.get_json(&api_path(&[
            "networks",
            net,
            "ports",
            &id.to_string(),
            "acl",
        ]))
    }

    /// `POST /v1/networks/{net}/ports/{id}/acl/{dir}`: insert a rule live; answers the
    /// port's filters afterwards.
    pub fn add_acl_rule(
        &self,
        net: &str,
        id: u32,
        dir: vnet_model::policy::acl::AclDirection,
        insert: &vnet_model::policy::acl::AclInsert,
    ) -> Result<vnet_model::policy::acl::AclReport, Error> {
        let path = api_path(&[
            "networks",
            net,
            "ports",
            &id.to_string(),
            "acl",
            dir.as_str(),
        ]);
        self.send_json(Method::POST, &path, insert)
    }

    /// `DELETE /v1/networks/{net}/ports/{id}/acl/{dir}/{position}`: remove a rule live
    /// (1-based position, as `acl` lists them).
    pub fn remove_acl_rule(
        &self,
        net: &str,
        id: u32,
        dir: vnet_model::policy::acl::AclDirection,
        position: usize,
    ) -> Result<(), Error> {
        let (id, position) = (id.to_string(), position.to_string());
        self.delete(&api_path(&[
            "networks",
            net,
            "ports",
            &id,
            "acl",
            dir.as_str(),
            &position,
        ]))
    }

    /// `PUT /v1/networks/{net}/ports/{id}/acl/{dir}/default`: what frames no rule
    /// matches get; answers the port's filters afterwards.
    pub fn set_acl_default(
        &self,
        net: &str,
        id: u32,
        dir: vnet_model::policy::acl::AclDirection,
        action: vnet_model::policy::acl::AclAction,
    ) -> Result<vnet_model::policy::acl::AclReport, Error> {
        let path = api_path(&[
            "networks",
            net,
            "ports",
            &id.to_string(),
            "acl",
            dir.as_str(),
            "default",
        ]);
        self.send_json(Method::PUT, &path, &action)
    }

    /// `PATCH /v1/networks/{net}/ports/{id}/policy`: change a port's own policy live.
    pub fn set_port_policy(
        &self,
        net: &str,
        id: u32,
        patch: &PolicyPatch,
    ) -> Result<PortInfo, Error> {
        let path = api_path(&["networks", net, "ports", &id.to_string(), "policy"]);
        self.send_json(Method::PATCH, &path, patch)
    }

    /// `GET /v1/networks/{net}/policy`: the policy of a vnet's client ports.
    pub fn policy(&self, net: &str) -> Result<PortPolicy, Error> {
        self.get_json(&api_path(&["networks", net, "policy"]))
    }

    /// `PATCH /v1/networks/{net}/policy`: change the policy of a vnet's client ports.
    pub fn set_policy(&self, net: &str, patch: &PolicyPatch) -> Result<PortPolicy, Error> {
        self.send_json(
            Method::PATCH,
            &api_path(&["networks", net, "policy"]),
            patch,
        )
    }

    /// `PUT /v1/networks/{net}/uplink`: bridge the vnet to a host NIC (replacing its
    /// uplink); answers the uplink's port.
    pub fn set_uplink(&self, net: &str, spec: &UplinkSpec) -> Result<PortInfo, Error> {
        self.send_json(Method::PUT, &api_path(&["networks", net, "uplink"]), spec)
    }

    /// `DELETE /v1/networks/{net}/uplink`
    pub fn remove_uplink(&self, net: &str) -> Result<(), Error> {
        self.delete(&api_path(&["networks", net, "uplink"]))
    }

    /// `POST /v1/networks/{net}/uplink/remotes`: add a remote VTEP to a VXLAN vnet;
    /// answers the uplink's port.
    pub fn add_remote(&self, net: &str, address: std::net::IpAddr) -> Result<PortInfo, Error> {
        let path = api_path(&["networks", net, "uplink", "remotes"]);
        self.send_json(Method::POST, &path, &vnet_model::RemoteSpec { address })
    }

    /// `DELETE /v1/networks/{net}/uplink/remotes/{addr}`
    pub fn remove_remote(&self, net: &str, address: std::net::IpAddr) -> Result<(), Error> {
        let addr = address.to_string();
        self.delete(&api_path(&["networks", net, "uplink", "remotes", &addr]))
    }

    /// `GET /v1/networks/{net}/fdb`: the MACs a VXLAN vnet knows behind remote VTEPs.
    pub fn fdb(&self, net: &str) -> Result<Vec<vnet_model::FdbEntry>, Error> {
        self.get_json(&api_path(&["networks", net, "fdb"]))
    }

    /// `POST /v1/networks/{net}/fdb`: pin a MAC behind a remote VTEP.
    pub fn add_fdb(
        &self,
        net: &str,
        entry: &vnet_model::FdbSpec,
    ) -> Result<vnet_model::FdbSpec, Error> {
        self.send_json(Method::POST, &api_path(&["networks", net, "fdb"]), entry)
    }

    /// `DELETE /v1/networks/{net}/fdb/{mac}`
    pub fn remove_fdb(&self, net: &str, mac: MacAddr) -> Result<(), Error> {
        let mac = mac.to_string();
        self.delete(&api_path(&["networks", net, "fdb", &mac]))
    }

    /// `GET /v1/networks/{net}/forwards`: the NAT device's port forwards.
    pub fn forwards(&self, net: &str) -> Result<Vec<vnet_model::ForwardSpec>, Error> {
        self.get_json(&api_path(&["networks", net, "forwards"]))
    }

    /// `POST /v1/networks/{net}/forwards`: add a port forward live.
    pub fn add_forward(
        &self,
        net: &str,
        spec: &vnet_model::ForwardSpec,
    ) -> Result<vnet_model::ForwardSpec, Error> {
        self.send_json(
            Method::POST,
            &api_path(&["networks", net, "forwards"]),
            spec,
        )
    }

    /// `DELETE /v1/networks/{net}/forwards/{host}?proto=…`: remove the `proto` forward
    /// on `host`.
    pub fn remove_forward(
        &self,
        net: &str,
        proto: vnet_model::ForwardProto,
        host: std::net::SocketAddr,
    ) -> Result<(), Error> {
        let host = host.to_string();
        let path = api_path(&["networks", net, "forwards", &host]);
        self.delete(&format!("{path}?proto={}", proto.as_str()))
    }

    /// `GET /v1/networks/{net}/mirrors`: the vnet's mirrors with state and counters.
    pub fn mirrors(&self, net: &str) -> Result<Vec<vnet_model::MirrorInfo>, Error> {
        self.get_json(&api_path(&["networks", net, "mirrors"]))
    }

    /// `POST /v1/networks/{net}/mirrors`: add a mirror live.
    pub fn add_mirror(
        &self,
        net: &str,
        spec: &vnet_model::MirrorSpec,
    ) -> Result<vnet_model::MirrorInfo, Error> {
        self.send_json(Method::POST, &api_path(&["networks", net, "mirrors"]), spec)
    }

    /// `DELETE /v1/networks/{net}/mirrors/{name}`: remove a mirror.
    pub fn remove_mirror(&self, net: &str, name: &str) -> Result<(), Error> {
        self.delete(&api_path(&["networks", net, "mirrors", name]))
    }

    /// `GET /v1/config`: the running configuration as a vnetd config file (TOML).
    pub fn export_config(&self) -> Result<String, Error> {
        let answer = self.request(Method::GET, &api_path(&["config"]), None)?;
        Ok(String::from_utf8_lossy(&answer.body).into_owned())
    }

    /// `POST /v1/reload`: re-read the config file and apply what changed in it.
    pub fn reload(&self) -> Result<vnet_model::Reloaded, Error> {
        let path = api_path(&["reload"]);
        let answer = self.request(Method::POST, &path, None)?;
        decode(Method::POST, &path, &answer.body)
    }

    /// `GET /metrics`: Prometheus text exposition.
    pub fn metrics(&self) -> Result<String, Error> {
        let answer = self.request(Method::GET, "/metrics", None)?;
        Ok(String::from_utf8_lossy(&answer.body).into_owned())
    }

    /// `GET /v1/networks/{net}/capture`: writes the pcapng stream of `ports` (all when
    /// empty) to `out`, each chunk flushed as it comes, until vnetd ends it after
    /// `count` frames or `out` is closed (a reader that quit: not an error). Only
    /// waiting for the answer's start is bounded by the timeout; the stream runs as long
    /// as the capture.
    pub fn capture(
        &self,
        net: &str,
        ports: &[u32],
        count: Option<u64>,
        snaplen: Option<u32>,
        out: &mut dyn io::Write,
    ) -> Result<(), Error> {
        let mut query: Vec<String> = ports.iter().map(|p| format!("port={p}")).collect();
        query.extend(count.map(|n| format!("count={n}")));
        query.extend(snaplen.map(|n| format!("snaplen={n}")));
        let path = format!(
            "{}?{}",
            api_path(&["networks", net, "capture"]),
            query.join("&")
        );
        self.runtime.block_on(stream(self, &path, out))
    }

    fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let answer = self.request(Method::GET, path, None)?;
        decode(Method::GET, path, &answer.body)
    }

    fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        let body = serde_json::to_vec(body).map_err(Error::Encode)?;
        let answer = self.request(method.clone(), path, Some(body))?;
        decode(method, path, &answer.body)
    }

    fn delete(&self, path: &str) -> Result<(), Error> {
        self.request(Method::DELETE, path, None).map(drop)
    }

    /// One request on a fresh connection; any non-2xx status becomes [`Error::Api`].
    fn request(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Answer, Error> {
        let exchange = exchange(&self.socket, method.clone(), path, body);
        let answer = self.block_on_with_timeout(exchange, &method, path)??;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(api_error(answer))
        }
    }

    fn block_on_with_timeout<T>(
        &self,
        work: impl Future<Output = T>,
        method: &Method,
        path: &str,
    ) -> Result<T, Error> {
        self.runtime
            .block_on(async { tokio::time::timeout(self.timeout, work).await })
            .map_err(|_| Error::Timeout {
                method: method.clone(),
                path: path.to_string(),
                timeout: self.timeout,
            })
    }
}

/// Connect, send one request, read the whole answer.
async fn exchange(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Answer, Error> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| connect_error(socket, source))?;
    let http_error = |source| Error::Http {
        method: method.clone(),
        path: path.to_string(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_error)?;
    // The connection task moves the bytes; it ends when the answer has been read and
    // `sender` is dropped.
    let driver = tokio::spawn(connection);

    let mut request = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(HOST, "vnetd")
        .header(ACCEPT, "application/json");
    if body.is_some() {
        request = request.header(CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("method, path and headers are valid");

    let response = sender.send_request(request).await.map_err(http_error)?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(http_error)?
        .to_bytes();
    drop(sender);
    driver.abort();
    Ok(Answer { status, body })
}

/// Connect, send a GET, copy the answer's body to `out` as it arrives.
async fn stream(client: &Client, path: &str, out: &mut dyn io::Write) -> Result<(), Error> {
    let http_error = |source| Error::Http {
        method: Method::GET,
        path: path.to_string(),
        source,
    };
    let start = async {
        let stream = UnixStream::connect(&client.socket)
            .await
            .map_err(|source| connect_error(&client.socket, source))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_error)?;
        let driver = tokio::spawn(connection);
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(HOST, "vnetd")
            .body(Full::new(Bytes::new()))
            .expect("method, path and headers are valid");
        let response = sender.send_request(request).await.map_err(http_error)?;
        Ok::<_, Error>((response, sender, driver))
    };
    let (response, sender, driver) =
        tokio::time::timeout(client.timeout, start)
            .await
            .map_err(|_| Error::Timeout {
                method: Method::GET,
                path: path.to_string(),
                timeout: client.timeout,
            })??;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let body = body.collect().await.map_err(http_error)?.to_bytes();
        return Err(api_error(Answer { status, body }));
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|source| Error::Broken {
            path: path.to_string(),
            source,
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match out.write_all(&data).and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
            Err(e) => return Err(Error::Write(e)),
        }
    }
    drop(sender);
    driver.abort();
    Ok(())
}

fn why_unreachable(path: &Path, error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => format!("no socket at {}", path.display()),
        io::ErrorKind::ConnectionRefused => format!("nothing listens on {}", path.display()),
        _ => format!("{}: {error}", path.display()),
    }
}

fn connect_error(path: &Path, source: io::Error) -> Error {
    let path = path.to_path_buf();
    match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            Error::NotRunning { path, source }
        }
        io::ErrorKind::PermissionDenied => Error::PermissionDenied { path, source },
        _ => Error::Connect { path, source },
    }
}

/// The error of a non-2xx answer: the server's `{"error": ...}` message, or failing
/// that its body text, or failing that the status's reason.
fn api_error(answer: Answer) -> Error {
    let message = match serde_json::from_slice::<ApiError>(&answer.body) {
        Ok(ApiError { error }) => error,
        Err(_) => {
            let text = String::from_utf8_lossy(&answer.body).trim().to_string();
            if text.is_empty() {
                answer
                    .status
                    .canonical_reason()
                    .unwrap_or("request failed")
                    .to_string()
            } else {
                text
            }
        }
    };
    Error::Api {
        status: answer.status,
        message,
    }
}

fn decode<T: DeserializeOwned>(method: Method, path: &str, body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|source| Error::Decode {
        method,
        path: path.to_string(),
        source,
    })
}

/// `/v1/seg/seg/...` with each segment percent-encoded, so a name the user typed can
/// never change the route. `:` is left as it is (RFC 3986 allows it in a segment), so a
/// MAC reads `52:54:00:12:34:56` in the request line.
fn api_path(segments: &[&str]) -> String {
    let mut path = API_PREFIX.to_string();
    for segment in segments {
        path.push('/');
        for byte in segment.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~:".contains(&byte) {
                path.push(byte as char);
            } else {
                path.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use vnet_model::{Counters, NetworkSockets, PortKind, VlanMode};

    /// What the fake daemon saw: the request line and body of each request.
    type Seen = Arc<Mutex<Vec<(String, String)>>>;

    /// A fake vnetd: answers each connection with the next canned HTTP response and
    /// records the request it got.
    struct FakeDaemon {
        _dir: TempDir,
        socket: PathBuf,
        seen: Seen,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "vnet-client-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn response(status: &str, content_type: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn json(status: &str, body: &str) -> String {
        response(status, "application/json", body)
    }

    impl FakeDaemon {
        fn start(answers: Vec<String>) -> FakeDaemon {
            let dir = TempDir::new("fake");
            let socket = dir.0.join("control.sock");
            let seen: Seen = Arc::default();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let thread = {
                let socket = socket.clone();
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async move {
                        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
                        ready_tx.send(()).unwrap();
                        for answer in answers {
                            let (mut conn, _) = listener.accept().await.unwrap();
                            let request = read_request(&mut conn).await;
                            seen.lock().unwrap().push(request);
                            conn.write_all(answer.as_bytes()).await.unwrap();
                            conn.shutdown().await.unwrap();
                        }
                    })
                })
            };
            ready_rx.recv().unwrap();
            FakeDaemon {
                _dir: dir,
                socket,
                seen,
                thread: Some(thread),
            }
        }

        fn client(&self) -> Client {
            Client::new(&self.socket)
                .unwrap()
                .with_timeout(Duration::from_secs(10))
        }

        /// Wait until every canned answer was served; return what was asked.
        fn finish(mut self) -> Vec<(String, String)> {
            self.thread.take().unwrap().join().unwrap();
            self.seen.lock().unwrap().clone()
        }
    }

    /// Read a request head and its content-length body.
    async fn read_request(conn: &mut tokio::net::UnixStream) -> (String, String) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let head_end = loop {
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed before sending a request");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = head.lines().next().unwrap().to_string();
        let body = String::from_utf8(buf[head_end..head_end + length].to_vec()).unwrap();
        (line, body)
    }

    fn sample_network() -> NetworkInfo {
        NetworkInfo {
            name: "vmnet1".into(),
            mtu: 1500,
            max_frame: 1514,
            mac_aging_secs: 300,
            max_macs_per_port: 1024,
            max_macs: 16384,
            ports: 0,
            macs: 0,
            sockets: NetworkSockets {
                stream: "/run/vnet/vmnet1/stream.sock".into(),
                dgram: "/run/vnet/vmnet1/dgram.sock".into(),
                api: "/run/vnet/vmnet1/api.sock".into(),
            },
            subnet: None,
            host_adapter: None,
            dhcp: None,
            uplink: None,
            nat: None,
            thread: 0,
            transient: false,
            allow_users: Vec::new(),
            allow_groups: Vec::new(),
            policy: Default::default(),
            captures: Default::default(),
            ipv6: None,
            dhcp_counters: None,
            snooping: Default::default(),
        }
    }

    fn sample_port() -> PortInfo {
        PortInfo {
            vxlan: None,
            id: 7,
            kind: PortKind::Tap,
            description: "tap7".into(),
            pid: None,
            state: None,
            uid: None,
            vlan: VlanMode::Access { vlan: 10 },
            mac: None,
            promiscuous: false,
            macs: vec!["52:54:00:12:34:56".parse().unwrap()],
            counters: Counters::default(),
            queue_len: 0,
            queue_capacity: 256,
            policy: Default::default(),
            enforced: Default::default(),
            policy_counters: Default::default(),
            mirror_destination: Vec::new(),
        }
    }

    #[test]
    fn reads_the_version() {
        let daemon = FakeDaemon::start(vec![json("200 OK", r#"{"version":"0.1.0","api":"v1"}"#)]);
        let version = daemon.client().version().unwrap();
        assert_eq!(version.version, "0.1.0");
        assert_eq!(version.api, "v1");
        let seen = daemon.finish();
        assert_eq!(seen[0].0, "GET /v1/version HTTP/1.1");
    }

    #[test]
    fn creates_a_network_and_lists_it() {
        let info = serde_json::to_string(&sample_network()).unwrap();
        let daemon = FakeDaemon::start(vec![
            json("201 Created", &info),
            json("200 OK", &format!("[{info}]")),
            json("200 OK", &info),
        ]);
        let client = daemon.client();
        let mut spec = NetworkSpec::named("vmnet1");
        spec.mtu = 9000;
        assert_eq!(client.create_network(&spec).unwrap(), sample_network());
        assert_eq!(client.networks().unwrap(), vec![sample_network()]);
        assert_eq!(client.network("vmnet1").unwrap(), sample_network());
        let seen = daemon.finish();
        assert_eq!(seen[0].0, "POST /v1/networks HTTP/1.1");
        let sent: NetworkSpec = serde_json::from_str(&seen[0].1).unwrap();
        assert_eq!(sent, spec);
        assert_eq!(seen[1].0, "GET /v1/networks HTTP/1.1");
        assert_eq!(seen[2].0, "GET /v1/networks/vmnet1 HTTP/1.1");
    }

    #[test]
    fn manages_ports_macs_and_deletes() {
        let port = serde_json::to_string(&sample_port()).unwrap();
        let daemon = FakeDaemon::start(vec![
            json("201 Created", &port),
            json("200 OK", &format!("[{port}]")),
            json("200 OK", &port),
            json(
                "200 OK",
                r#"[{"vlan":10,"mac":"52:54:00:12:34:56","port":7,"age_secs":3,"fixed":false}]"#,
            ),
            response("204 No Content", "application/json", ""),
            response("204 No Content", "application/json", ""),
            response("200 OK", "text/plain; version=0.0.4", "vnet_up 1\n"),
        ]);
        let client = daemon.client();
        let spec = PortSpec::Tap {
            ifname: "tap7".into(),
            vlan: VlanMode::Access { vlan: 10 },
            policy: Default::default(),
        };
        assert_eq!(client.add_port("vmnet1", &spec).unwrap(), sample_port());
        assert_eq!(client.ports("vmnet1").unwrap(), vec![sample_port()]);
        assert_eq!(client.port("vmnet1", 7).unwrap(), sample_port());
        let macs = client.macs("vmnet1").unwrap();
        assert_eq!(macs[0].port, 7);
        client.remove_port("vmnet1", 7).unwrap();
        client.delete_network("vmnet1").unwrap();
        assert_eq!(client.metrics().unwrap(), "vnet_up 1\n");
        let seen = daemon.finish();
        let lines: Vec<&str> = seen.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            lines,
            [
                "POST /v1/networks/vmnet1/ports HTTP/1.1",
                "GET /v1/networks/vmnet1/ports HTTP/1.1",
                "GET /v1/networks/vmnet1/ports/7 HTTP/1.1",
                "GET /v1/networks/vmnet1/macs HTTP/1.1",
                "DELETE /v1/networks/vmnet1/ports/7 HTTP/1.1",
                "DELETE /v1/networks/vmnet1 HTTP/1.1",
                "GET /metrics HTTP/1.1",
            ]
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&seen[0].1).unwrap(),
            serde_json::json!({"kind": "tap", "ifname": "tap7", "vlan": {"mode": "access", "vlan": 10}})
        );
    }

    #[test]
    fn lists_leases_and_changes_dhcp_settings_and_reservations() {
        let lease = r#"{"mac":"52:54:00:12:34:56","ip":"192.168.101.128","hostname":"web1","expires":1700000000,"state":"bound"}"#;
        let reservation = Reservation {
            mac: "52:54:00:aa:bb:cc".parse().unwrap(),
            ip: "192.168.101.10".parse().unwrap(),
            hostname: Some("db".into()),
            ip6: None,
            duid: None,
        };
        let mut dhcp = DhcpSpec {
            range: Some([
                "192.168.101.100".parse().unwrap(),
                "192.168.101.199".parse().unwrap(),
            ]),
            dns: vec!["192.168.101.1".parse().unwrap()],
            ..DhcpSpec::default()
        };
        dhcp.reservations.push(reservation.clone());
        let mut network = sample_network();
        network.subnet = Some("192.168.101.0/24".parse().unwrap());
        network.dhcp = Some(dhcp.clone());
        let daemon = FakeDaemon::start(vec![
            json("200 OK", &format!("[{lease}]")),
            json("200 OK", &serde_json::to_string(&network).unwrap()),
            json("201 Created", &serde_json::to_string(&reservation).unwrap()),
            response("204 No Content", "application/json", ""),
            json(
                "404 Not Found",
                r#"{"error":"no reservation for 52:54:00:aa:bb:cc"}"#,
            ),
        ]);
        let client = daemon.client();

        let leases = client.leases("vmnet1").unwrap();
        assert_eq!(
            leases,
            [Lease {
                mac: "52:54:00:12:34:56".parse().unwrap(),
                ip: "192.168.101.128".parse().unwrap(),
                hostname: Some("web1".into()),
                expires: 1_700_000_000,
                state: "bound".into(),
                duid: None,
            }]
        );
        assert_eq!(client.set_dhcp("vmnet1", &dhcp).unwrap(), network);
        assert_eq!(
            client.add_reservation("vmnet1", &reservation).unwrap(),
            reservation
        );
        client
            .remove_reservation("vmnet1", reservation.mac)
            .unwrap();
        let err = client
            .remove_reservation("vmnet1", reservation.mac)
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));

        let seen = daemon.finish();
        let lines: Vec<&str> = seen.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            lines,
            [
                "GET /v1/networks/vmnet1/leases HTTP/1.1",
                "PUT /v1/networks/vmnet1/dhcp HTTP/1.1",
                "POST /v1/networks/vmnet1/dhcp/reservations HTTP/1.1",
                "DELETE /v1/networks/vmnet1/dhcp/reservations/52:54:00:aa:bb:cc HTTP/1.1",
                "DELETE /v1/networks/vmnet1/dhcp/reservations/52:54:00:aa:bb:cc HTTP/1.1",
            ]
        );
        assert_eq!(serde_json::from_str::<DhcpSpec>(&seen[1].1).unwrap(), dhcp);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&seen[2].1).unwrap(),
            serde_json::json!({"mac": "52:54:00:aa:bb:cc", "ip": "192.168.101.10", "hostname": "db"})
        );
        assert_eq!(seen[3].1, "");
    }

    #[test]
    fn an_error_answer_carries_the_daemons_message_and_status() {
        let daemon = FakeDaemon::start(vec![
            json("404 Not Found", r#"{"error":"no vnet named \"nope\""}"#),
            response("500 Internal Server Error", "text/plain", "boom\n"),
            response("409 Conflict", "text/plain", ""),
        ]);
        let client = daemon.client();
        match client.network("nope").unwrap_err() {
            Error::Api { status, message } => {
                assert_eq!(status, StatusCode::NOT_FOUND);
                assert_eq!(message, "no vnet named \"nope\"");
            }
            other => panic!("expected an API error, got {other:?}"),
        }
        let err = client.networks().unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(err.to_string(), "boom (500 Internal Server Error)");
        let err = client.delete_network("x").unwrap_err();
        assert_eq!(err.to_string(), "Conflict (409 Conflict)");
        daemon.finish();
    }

    #[test]
    fn a_success_with_a_body_of_the_wrong_shape_is_a_decode_error() {
        let daemon = FakeDaemon::start(vec![json("200 OK", r#"{"name": 3}"#)]);
        let err = daemon.client().networks().unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err:?}");
        daemon.finish();
    }

    #[test]
    fn a_missing_socket_says_to_start_vnetd() {
        let dir = TempDir::new("missing");
        let client = Client::for_run_dir(&dir.0).unwrap();
        let err = client.version().unwrap_err();
        assert!(matches!(err, Error::NotRunning { .. }), "{err:?}");
        assert!(err.is_unreachable());
        let text = err.to_string();
        assert!(text.contains("start `vnetd`"), "{text}");
        assert!(text.contains("--run-dir"), "{text}");
        assert!(text.contains("control.sock"), "{text}");
    }

    #[test]
    fn a_socket_nobody_listens_on_means_not_running() {
        let dir = TempDir::new("stale");
        let path = dir.0.join("control.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let err = Client::new(&path).unwrap().version().unwrap_err();
        assert!(matches!(err, Error::NotRunning { .. }), "{err:?}");
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(
            api_path(&["networks", "vm net/1"]),
            "/v1/networks/vm%20net%2F1"
        );
        assert_eq!(api_path(&["networks", "a-b_c.d"]), "/v1/networks/a-b_c.d");
        assert_eq!(
            api_path(&["r", "52:54:00:aa:bb:cc"]),
            "/v1/r/52:54:00:aa:bb:cc"
        );
        assert_eq!(api_path(&["r", "a?b#c"]), "/v1/r/a%3Fb%23c");
    }
}
