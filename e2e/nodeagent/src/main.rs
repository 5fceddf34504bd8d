//! `microplane-nodeagent`: flags and wiring.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use microplane_nodeagent::build::package::Publisher;
use microplane_nodeagent::{node, pods};

/// The dev/e2e build node (see the crate docs).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Name of the Node to register.
    #[arg(long, default_value = "microplane-builder")]
    node: String,
    /// Directory of the build pods' work: clones and the containers' logs.
    #[arg(long)]
    state_dir: PathBuf,
    /// The platform's builder image: a pod whose `build` container runs it (any tag or digest) is a
    /// build this agent performs itself (clone, cargo or go build, image pushed).
    #[arg(
        long,
        env = "MICROPLANE_BUILDER_IMAGE",
        default_value = "localhost/microplane/builder"
    )]
    builder_image: String,
    /// Compiler caches shared between builds (cargo target directories per repository, the go
    /// build cache); default `<state-dir>/build-cache`.
    #[arg(long, env = "MICROPLANE_BUILD_CACHE")]
    build_cache: Option<PathBuf>,
    /// How many builds may run at once.
    #[arg(long, env = "MICROPLANE_PARALLEL_BUILDS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    parallel_builds: u16,
    /// The crane binary (go-containerregistry) that assembles and pushes the images.
    #[arg(long)]
    crane: PathBuf,
    /// The base layer of every image (a tarball; `make images` writes target/images/layers/base.tar).
    #[arg(long)]
    base_layer: PathBuf,
    /// The registry as this machine reaches it, `host:port` over plain HTTP (the node's
    /// `localhost:5000` is `$NODE_IP:5000` from the host); it replaces the registry in BUILD_IMAGE.
    #[arg(long)]
    registry_address: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    microplane_runtime::Logging::new("MICROPLANE_LOG", "info").init();
    let publisher = Publisher {
        crane: args.crane,
        base_layer: args.base_layer,
        registry: args.registry_address,
    };
    publisher
        .check()
        .map_err(anyhow::Error::msg)
        .context("cannot push images")?;
    let client = kube::Client::try_default().await?;
    let settings = pods::Settings {
        node: args.node.clone(),
        build_cache: args.build_cache.unwrap_or_else(|| args.state_dir.join("build-cache")),
        state_dir: args.state_dir,
        builder_image: args.builder_image,
        parallel_builds: usize::from(args.parallel_builds),
        publisher,
    };
    let agent = pods::Agent::new(client.clone(), settings);
    let heartbeat = tokio::spawn(node::run(client, args.node));
    let shutdown = microplane_runtime::shutdown_signal()?;
    // On the way out, running builds are dropped: their processes are killed, and a restarted
    // agent performs their pods again from the clone.
    tokio::select! {
        () = agent.run() => {},
        r = heartbeat => { tracing::error!(?r, "node heartbeat stopped"); },
        () = shutdown => {},
    }
    Ok(())
}
