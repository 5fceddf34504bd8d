//! The server: the service's own gRPC services plus health and reflection, with graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::codegen::Service as TowerService;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::config::{self, Config};
use crate::{Error, Options};

/// How long connections may keep draining after shutdown began before the server stops waiting
/// (a long-lived stream must not outlast the pod's 30 s termination grace period).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(25);

/// A service being set up: its options and configuration, the gRPC services it serves and their
/// descriptors. [`Service::run`] serves it until SIGTERM or SIGINT.
#[derive(Debug)]
pub struct Service {
    options: Options,
    config: Config,
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    descriptors: Vec<&'static [u8]>,
    health: HealthReporter,
    poll_interval: Duration,
    drain_delay: Duration,
    shutdown_timeout: Duration,
}

impl Service {
    /// Sets up a service from the environment ([`Options::from_env`]), loading the Configs under
    /// `MICRO_CONFIG_DIR`. `default_name` is used when `MICRO_SERVICE_NAME` is unset.
    pub fn new(default_name: &str) -> Result<Self, Error> {
        Self::with_options(Options::from_env(default_name)?)
    }

    /// Sets up a service from explicit options, loading the Configs under `options.config_dir`.
    pub fn with_options(options: Options) -> Result<Self, Error> {
        let config = match &options.config_dir {
            Some(dir) => Config::load(dir)?,
            None => Config::empty(),
        };
        Ok(Self::with_config(options, config))
    }

    /// Sets up a service with explicit options and configuration.
    pub fn with_config(options: Options, config: Config) -> Self {
        Self {
            options,
            config,
            routes: RoutesBuilder::default(),
            names: Vec::new(),
            descriptors: Vec::new(),
            health: HealthReporter::new(),
            poll_interval: config::DEFAULT_POLL_INTERVAL,
            drain_delay: Duration::ZERO,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    /// Who the service is and where it listens.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The service's configuration; clone it into handlers. It follows file changes while the
    /// service runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The health reporter, for services that want to report `NOT_SERVING` themselves (for example
    /// while a dependency is down). Every added service is reported `SERVING` when serving starts.
    pub fn health_reporter(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Adds a tonic service (a generated `…Server`).
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: TowerService<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self.names.push(S::NAME);
        self
    }

    /// Registers an encoded `FileDescriptorSet` (what the service's build script wrote) for server
    /// reflection. The gateway reads endpoints and message types from it.
    pub fn file_descriptor_set(mut self, encoded: &'static [u8]) -> Self {
        self.descriptors.push(encoded);
        self
    }

    /// How often the configuration files are re-read (default one second).
    pub fn config_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How long to keep accepting calls after reporting `NOT_SERVING` on shutdown, so that callers
    /// still holding this endpoint are not refused (default none).
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// How long open connections may drain before the server stops waiting for them (default
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`]).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Listens on `MICRO_SERVICE_ADDRESS` and serves until SIGTERM or SIGINT, then shuts down
    /// gracefully.
    pub async fn run(self) -> Result<(), Error> {
        let signal = shutdown_signal()?;
        let listener = self.options.address.bind().await?;
        self.serve_with_listener(listener, signal).await
    }

    /// Serves on `listener` until `shutdown` completes (tests bind `127.0.0.1:0` and pass a channel).
    ///
    /// On shutdown every service, and the server as a whole (`""`), is reported `NOT_SERVING`; the
    /// listener keeps accepting for the drain delay, then closes, and open calls may finish within
    /// the shutdown timeout.
    pub async fn serve_with_listener<F>(self, listener: TcpListener, shutdown: F) -> Result<(), Error>
    where
        F: Future<Output = ()> + Send,
    {
        let address = listener
            .local_addr()
            .map_or_else(|_| "unknown".to_string(), |address| address.to_string());
        let reflection = || {
            self.descriptors.iter().fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
                |builder, encoded| builder.register_encoded_file_descriptor_set(encoded),
            )
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        for name in &self.names {
            self.health.set_service_status(name, ServingStatus::Serving).await;
        }
        let mut routes = self.routes;
        routes
            .add_service(HealthServer::new(HealthService::from_health_reporter(
                self.health.clone(),
            )))
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        let router = Server::builder()
            .trace_fn(|request| tracing::debug_span!("grpc", path = %request.uri().path()))
            .add_routes(routes.routes());
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));

        let _watcher = AbortOnDrop(tokio::spawn(self.config.clone().watch(self.poll_interval)));
        tracing::info!(
            service = %self.options.name,
            version = %self.options.version,
            namespace = %self.options.namespace,
            %address,
            services = ?self.names,
            "serving"
        );

        let (draining, drained) = oneshot::channel::<()>();
        let health = self.health.clone();
        let names = self.names.clone();
        let drain_delay = self.drain_delay;
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: reporting NOT_SERVING");
            health.set_service_status("", ServingStatus::NotServing).await;
            for name in names {
                health.set_service_status(name, ServingStatus::NotServing).await;
            }
            if !drain_delay.is_zero() {
                tokio::time::sleep(drain_delay).await;
            }
            tracing::info!("closing the listener, draining connections");
            let _ = draining.send(());
        };
        let shutdown_timeout = self.shutdown_timeout;
        let give_up = async move {
            match drained.await {
                Ok(()) => tokio::time::sleep(shutdown_timeout).await,
                // The server ended before shutdown began: the other branch completes.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            served = router.serve_with_incoming_shutdown(incoming, signal) => served?,
            () = give_up => tracing::warn!(timeout = ?shutdown_timeout, "connections still open; stopping anyway"),
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Completes on SIGTERM (what the kubelet sends) or SIGINT (Ctrl-C). The handlers are installed when
/// this is called, so signals that arrive before the future is polled are not lost.
pub fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, Error> {
    microplane_runtime::shutdown_signal().map_err(Error::Signal)
}

/// Stops a background task when the server future ends or is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
