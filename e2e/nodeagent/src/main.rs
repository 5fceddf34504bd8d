//! `microplane-nodeagent`: flags and wiring.

use std::path::PathBuf;

use clap::Parser;
use microplane_nodeagent::net::Cidr;
use microplane_nodeagent::{node, pods};

/// The dev/e2e node agent (see the crate docs).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Name of the Node to register.
    #[arg(long, default_value = "microplane-node")]
    node: String,
    /// Network namespace pods live in (made by e2e/scripts/netns-up.sh).
    #[arg(long)]
    netns: String,
    /// Range of pod addresses (routed from the host into the namespace).
    #[arg(long)]
    pod_cidr: Cidr,
    /// Directory of the workspace binaries images map to.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Directory for pod volumes, container logs and the store of images built here.
    #[arg(long)]
    state_dir: PathBuf,
    /// The platform's builder image: a pod whose `build` container runs it (any tag or digest) is a
    /// build this agent performs itself (clone, cargo or go build, register the executable).
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_ansi(ansi)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MICROPLANE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    let client = kube::Client::try_default().await?;
    let settings = pods::Settings {
        node: args.node.clone(),
        netns: args.netns,
        cidr: args.pod_cidr,
        bin_dir: args.bin_dir,
        build_cache: args.build_cache.unwrap_or_else(|| args.state_dir.join("build-cache")),
        state_dir: args.state_dir,
        builder_image: args.builder_image,
        parallel_builds: usize::from(args.parallel_builds),
    };
    let agent = pods::Agent::new(client.clone(), settings);
    let heartbeat = tokio::spawn(node::run(client, args.node, args.pod_cidr.to_string()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = agent.clone().run() => {},
        r = heartbeat => { tracing::error!(?r, "node heartbeat stopped"); },
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("stopping pods");
    agent.stop_all();
    // Give supervisors their grace to stop processes (they are killed on drop otherwise).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    Ok(())
}
