// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The agent's API over its Unix socket: HTTP/1.1 and JSON, like Docker's
//! Engine API (`curl --unix-socket /run/netd/netd.sock http://netd/v1/status`).
//! Errors are JSON too: `{"message": ..., "kind": ..., "hint": ...}` (the
//! hint where one exists) with a 4xx/5xx status.

use std::{fs, net::Ipv4Addr, os::unix::fs::PermissionsExt as _, path::Path, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{FromRequest, Path as UrlPath, Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::de::DeserializeOwned;
use tokio::{
    net::{UnixListener, UnixStream},
    signal::unix::{SignalKind, signal},
    sync::{Mutex, Notify},
};
use tracing::info;

use super::{
    Agent,
    endpoint::{NewEndpoint, Placement},
    error::{AgentError, ErrorKind},
    http::{self, HeadTimeout, MAX_BODY},
    metrics::ApiRequests,
};
use crate::{
    api::{AttachRequest, DetachRequest, DetachResponse, ErrorBody, PortsRequest, PortsResponse},
    mac::MacAddr,
    portspec::PortSpec,
};

#[derive(Clone)]
struct Shared {
    agent: Arc<Mutex<Agent>>,
    /// Notified when a `down` request has removed everything.
    stop: Arc<Notify>,
    /// API requests answered, for the metrics.
    requests: ApiRequests,
}

/// An error answer.
struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(kind: ErrorKind, message: String) -> Self {
        Self {
            status: StatusCode::from_u16(kind.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: ErrorBody {
                message,
                kind: kind.as_str().to_owned(),
                hint: None,
            },
        }
    }
}

impl From<AgentError> for ApiError {
    fn from(err: AgentError) -> Self {
        let mut answer = Self::new(err.kind(), crate::error::one_line(&err));
        answer.body.hint = err.hint();
        answer
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The answer to a body over [`MAX_BODY`].
fn too_large() -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        body: ErrorBody {
            message: format!("request body larger than {MAX_BODY} bytes"),
            kind: ErrorKind::InvalidArgument.as_str().to_owned(),
            hint: None,
        },
    }
}

/// A JSON body whose every rejection (too large, cut off, malformed, wrong
/// fields) is a JSON error answer naming the problem.
struct Body<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // A declared length over the limit is refused before reading: the
        // body limit alone only trips once that much has arrived, and a
        // client that sends the headers first and waits would wait forever.
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > MAX_BODY as u64) {
            return Err(too_large());
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                return too_large();
            }
            ApiError {
                status,
                body: ErrorBody {
                    message: format!("reading the request body: {}", rejection.body_text()),
                    kind: ErrorKind::InvalidArgument.as_str().to_owned(),
                    hint: None,
                },
            }
        })?;
        serde_json::from_slice(&bytes).map(Body).map_err(|err| {
            ApiError::new(
                ErrorKind::InvalidArgument,
                format!("invalid request body: {err}"),
            )
        })
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The agent's settings and the health of each part of the datapath (the
/// metrics read `status()` alone: they need no health check).
async fn status(State(s): State<Shared>) -> Json<crate::api::Status> {
    let agent = s.agent.lock().await;
    let mut status = agent.status();
    status.health = agent.health().await;
    Json(status)
}

/// `GET /v1/network`: every network, as `docker network inspect` shows
/// them (kept from when the agent had one).
async fn network(State(s): State<Shared>) -> ApiResult<Json<Vec<crate::api::NetworkInspect>>> {
    Ok(Json(s.agent.lock().await.inspect(&[])?))
}

async fn list_networks(State(s): State<Shared>) -> Json<Vec<crate::api::NetworkSummary>> {
    Json(s.agent.lock().await.networks())
}

async fn create_network(
    State(s): State<Shared>,
    Body(req): Body<crate::api::NetworkCreateRequest>,
) -> ApiResult<(StatusCode, Json<crate::api::NetworkSummary>)> {
    let created = s.agent.lock().await.create_network(req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn inspect_network(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<crate::api::NetworkInspect>> {
    let mut found = s.agent.lock().await.inspect(&[name])?;
    Ok(Json(found.remove(0)))
}

async fn delete_network(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<crate::api::NetworkSummary>> {
    Ok(Json(s.agent.lock().await.remove_network(&name).await?))
}

async fn list_endpoints(State(s): State<Shared>) -> Json<Vec<crate::api::Endpoint>> {
    Json(s.agent.lock().await.endpoints())
}

async fn attach(
    State(s): State<Shared>,
    Body(req): Body<AttachRequest>,
) -> ApiResult<(StatusCode, Json<crate::api::Endpoint>)> {
    let new = new_endpoint(req)?;
    let mut agent = s.agent.lock().await;
    let endpoint = agent.create_endpoint(new).await?;
    Ok((StatusCode::CREATED, Json(agent.view(&endpoint))))
}

/// An attach request (`netd attach`, the CNI plugin's ADD) as the network
/// core takes it: every string parsed, the namespace opened.
fn new_endpoint(req: AttachRequest) -> Result<NewEndpoint, AgentError> {
    let ip = req
        .ip
        .as_deref()
        .map(|ip| {
            ip.parse::<Ipv4Addr>()
                .map_err(|_| AgentError::IpSyntax(ip.to_owned()))
        })
        .transpose()?;
    let mac = req.mac.as_deref().map(str::parse::<MacAddr>).transpose()?;
    let ports = req
        .ports
        .iter()
        .map(|s| s.parse())
        .collect::<Result<Vec<PortSpec>, _>>()?;
    let placement = Placement::Netns {
        given: req.netns,
        ifname: req.ifname,
    };
    Ok(NewEndpoint {
        network: req.network,
        id: None,
        name: req.name,
        ip,
        mac,
        owner: req.owner,
        container_id: req.container_id,
        aliases: req.aliases,
        ports,
        placement,
    })
}

async fn detach(
    State(s): State<Shared>,
    Body(req): Body<DetachRequest>,
) -> ApiResult<Json<DetachResponse>> {
    let detached = s
        .agent
        .lock()
        .await
        .detach_netns(&req.netns, req.network.as_deref())
        .await?;
    Ok(Json(DetachResponse { detached }))
}

async fn rename(
    State(s): State<Shared>,
    Body(req): Body<crate::api::RenameRequest>,
) -> ApiResult<Json<Vec<crate::api::Endpoint>>> {
    Ok(Json(
        s.agent.lock().await.rename(&req.target, &req.name).await?,
    ))
}

/// The endpoint, once checked in the kernel (a CNI CHECK).
async fn check_endpoint(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<crate::api::Endpoint>> {
    Ok(Json(s.agent.lock().await.check_endpoint(&name).await?))
}

async fn delete_endpoint(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<crate::api::Endpoint>> {
    Ok(Json(s.agent.lock().await.detach_name(&name).await?))
}

async fn publish(
    State(s): State<Shared>,
    Body(req): Body<PortsRequest>,
) -> ApiResult<(StatusCode, Json<PortsResponse>)> {
    let ports = s
        .agent
        .lock()
        .await
        .publish(&req.target, &req.specs, req.network.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(PortsResponse { ports })))
}

async fn unpublish(
    State(s): State<Shared>,
    Body(req): Body<PortsRequest>,
) -> ApiResult<Json<PortsResponse>> {
    let ports = s
        .agent
        .lock()
        .await
        .unpublish(&req.target, &req.specs, req.network.as_deref())
        .await?;
    Ok(Json(PortsResponse { ports }))
}

async fn list_ports(State(s): State<Shared>) -> ApiResult<Json<Vec<crate::api::Port>>> {
    Ok(Json(s.agent.lock().await.ports()?))
}

async fn conntrack(State(s): State<Shared>) -> ApiResult<Json<Vec<crate::api::Flow>>> {
    Ok(Json(s.agent.lock().await.conntrack()?))
}

async fn stats(State(s): State<Shared>) -> ApiResult<Json<crate::api::Stats>> {
    Ok(Json(s.agent.lock().await.stats()?))
}

/// `GET /metrics`: Prometheus's text format. The agent's lock is held for
/// the snapshot of labels only; the maps are read on a blocking thread.
async fn metrics(State(s): State<Shared>) -> ApiResult<Response> {
    let snapshot = s.agent.lock().await.metrics_snapshot();
    let requests = s.requests.clone();
    let rendered =
        tokio::task::spawn_blocking(move || super::metrics::render(&snapshot, &requests))
            .await
            .map_err(|err| ApiError::new(ErrorKind::Internal, format!("metrics: {err}")))?
            .map_err(AgentError::from)?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        rendered,
    )
        .into_response())
}

/// `GET /v1/monitor`'s query: what to stream (drops and flows when
/// neither is named), for which endpoint, how fast.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MonitorQuery {
    #[serde(default)]
    drops: bool,
    #[serde(default)]
    flows: bool,
    endpoint: Option<String>,
    #[serde(default)]
    verbose: bool,
    rate: Option<u32>,
}

/// `GET /v1/monitor`: the live monitor, one JSON event per line until the
/// client goes or the agent stops.
async fn monitor(
    State(s): State<Shared>,
    query: Result<axum::extract::Query<MonitorQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let axum::extract::Query(query) = query.map_err(|rejection| {
        ApiError::new(
            ErrorKind::InvalidArgument,
            format!("invalid monitor query: {}", rejection.body_text()),
        )
    })?;
    let rate = query.rate.unwrap_or(super::monitor::default_rate());
    if !(1..=super::monitor::MAX_RATE).contains(&rate) {
        return Err(ApiError::new(
            ErrorKind::InvalidArgument,
            format!(
                "monitor rate {rate} is out of range: 1 to {} events per second per CPU",
                super::monitor::MAX_RATE
            ),
        ));
    }
    let both = !query.drops && !query.flows;
    let want = super::monitor::Want {
        drops: query.drops || both,
        flows: query.flows || both,
        rate,
    };
    let (hub, filter) = {
        let agent = s.agent.lock().await;
        let filter = match &query.endpoint {
            Some(name) => Some(
                agent
                    .monitor_endpoints()
                    .into_iter()
                    .find(|ep| &ep.name == name || &ep.id == name)
                    .ok_or_else(|| AgentError::UnknownEndpoint(name.clone()))?,
            ),
            None => None,
        };
        agent.monitor().set_endpoints(agent.monitor_endpoints());
        (agent.monitor().clone(), filter)
    };
    let stream = super::monitor::stream(hub.subscribe(want), want, filter, query.verbose);
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

async fn down(State(s): State<Shared>) -> Json<crate::api::DownReport> {
    let report = crate::api::DownReport::from(s.agent.lock().await.down().await);
    s.stop.notify_one();
    Json(report)
}

async fn not_found() -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        "no such API path (see docs/cli.md, API)".to_owned(),
    )
}

/// A path the API has, asked with a method it does not take: an error in
/// JSON like every other (axum's own answer has an empty body).
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        body: ErrorBody {
            message: format!(
                "method {method} is not allowed on {} (see docs/cli.md, API)",
                uri.path()
            ),
            kind: ErrorKind::InvalidArgument.as_str().to_owned(),
            hint: None,
        },
    }
}

fn router(shared: Shared) -> Router {
    let requests = shared.requests.clone();
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/network", get(network))
        .route("/v1/networks", get(list_networks).post(create_network))
        .route(
            "/v1/networks/{name}",
            get(inspect_network).delete(delete_network),
        )
        .route("/v1/endpoints", get(list_endpoints).post(attach))
        .route(
            "/v1/endpoints/{name}",
            get(check_endpoint).delete(delete_endpoint),
        )
        .route("/v1/detach", post(detach))
        .route("/v1/rename", post(rename))
        .route("/v1/ports", get(list_ports).post(publish))
        .route("/v1/ports/unpublish", post(unpublish))
        .route("/v1/conntrack", get(conntrack))
        .route("/v1/stats", get(stats))
        .route("/v1/monitor", get(monitor))
        .route("/v1/down", post(down))
        .route("/metrics", get(metrics))
        // Around the routes, where the matched route is known: its pattern
        // is the label (a path per network name would be unbounded).
        .route_layer(axum::middleware::from_fn_with_state(
            requests,
            ApiRequests::count,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared)
}

/// Binds the API socket (mode 0600: the API is root's). A stale socket file
/// is replaced; a live one means another agent, and is an error.
async fn bind(path: &Path) -> Result<UnixListener, AgentError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|source| AgentError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(AgentError::SocketInUse(path.to_owned()));
        }
        let _ = fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|source| AgentError::Io {
        what: format!("binding {}", path.display()),
        source,
    })?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|source| {
        AgentError::Io {
            what: format!("setting the mode of {}", path.display()),
            source,
        }
    })?;
    Ok(listener)
}

/// Serves the API until SIGTERM, SIGINT or a `down` request. Networking is
/// left in place on a signal: a restarted agent adopts it.
pub async fn serve(agent: Agent) -> anyhow::Result<()> {
    let socket = agent.config().socket.clone();
    let listener = bind(&socket).await?;
    // Docker's network driver, if asked for, on a socket of its own.
    let docker_socket = agent.config().docker_plugin_socket.clone();
    let docker_listener = match &docker_socket {
        Some(path) => {
            let listener = bind(path).await?;
            info!(socket = %path.display(), "serving Docker's network driver");
            Some(listener)
        }
        None => None,
    };
    let metrics_listener = match agent.config().metrics_address {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| AgentError::Io {
                    what: format!("binding the metrics address {address}"),
                    source,
                })?;
            info!(%address, "serving metrics");
            Some(listener)
        }
        None => None,
    };
    let shared = Shared {
        agent: Arc::new(Mutex::new(agent)),
        stop: Arc::new(Notify::new()),
        requests: ApiRequests::default(),
    };
    // The metrics' listener serves `GET /metrics` only: a TCP port must
    // never reach the API, which is root's.
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = metrics_listener.map(|listener| {
        let router = Router::new()
            .route("/metrics", get(metrics))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(shared.clone());
        tokio::spawn(http::serve(
            listener,
            router,
            HeadTimeout::EveryRequest,
            "metrics",
            async move {
                let _ = metrics_stopped.await;
            },
        ))
    });
    let stop = shared.stop.clone();
    let (stop_docker, docker_stopped) = tokio::sync::oneshot::channel::<()>();
    let docker = docker_listener.map(|listener| {
        tokio::spawn(super::docker::serve(
            listener,
            shared.agent.clone(),
            async move {
                let _ = docker_stopped.await;
            },
        ))
    });
    // Periodic work every second; address and link changes at once (a new
    // address answers for published ports as soon as it exists).
    let mut changes = crate::netlink::Netlink::watch_addresses_and_links()?;
    let ticker = {
        let agent = shared.agent.clone();
        tokio::spawn(async move {
            use futures::{FutureExt as _, StreamExt as _};
            let mut interval = tokio::time::interval(std::time::Duration::from_secs(1));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = interval.tick() => {
                        let due = agent.lock().await.tick().await;
                        if let Some(due) = due {
                            // Read without the agent's lock, collected under it.
                            let (due, read) = tokio::task::spawn_blocking(move || {
                                let read = due.read();
                                (due, read)
                            })
                            .await
                            .expect("the conntrack read does not panic");
                            agent.lock().await.collect_garbage(&due, read);
                        }
                    }
                    Some(_) = changes.next() => {
                        let mut agent = agent.lock().await;
                        // One sync for a burst (making a bridge or a veth is
                        // several notifications; a sync reads every
                        // address): what came before it is covered.
                        while let Some(Some(_)) = changes.next().now_or_never() {}
                        if let Err(err) = agent.sync_local_addrs().await {
                            tracing::warn!(error = %err, "syncing local addresses");
                        }
                    }
                }
            }
        })
    };
    // The live monitor's reader; its streams end when the agent stops (a
    // stream would otherwise hold the graceful stop for its whole drain).
    let monitor = shared.agent.lock().await.monitor().clone();
    let monitor_reader = {
        let bpffs = shared.agent.lock().await.config().bpffs.clone();
        tokio::spawn(monitor.clone().read(bpffs, shared.agent.clone()))
    };
    info!(socket = %socket.display(), "serving the API");
    // systemd's `Type=notify`: ready once the API socket is bound (and the
    // datapath, names and ticker with it); a no-op outside systemd.
    if let Err(err) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %err, "telling systemd the agent is ready");
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: stopping; networking stays in place"),
            _ = int.recv() => info!("SIGINT: stopping; networking stays in place"),
            () = stop.notified() => info!("down: everything removed; stopping"),
        }
        monitor.close();
    };
    let served = http::serve(
        listener,
        router(shared),
        HeadTimeout::EveryRequest,
        "api",
        shutdown,
    )
    .await;
    ticker.abort();
    monitor_reader.abort();
    let _ = stop_metrics.send(());
    if let Some(server) = metrics_server {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
    }
    let _ = fs::remove_file(&socket);
    if let Some(docker) = docker {
        // Calls in progress finish; idle connections close.
        let _ = stop_docker.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), docker).await;
    }
    if let Some(path) = &docker_socket {
        let _ = fs::remove_file(path);
    }
    served?;
    Ok(())
}
