//! `microplane`: Micro's CLI experience on Microplane (docs/cli.md). Cluster commands (`run`,
//! `kill`, `services`, `status`, `logs`) use the kubeconfig; calls (`call`, the endpoint commands
//! generated from the tenant's OpenAPI document, `endpoints`) and `login` use the gateway.
//!
//! Exit codes: 0 done; 1 anything unexpected (the gateway or cluster unreachable); 2 a bad
//! command or request (400, a refused object); 3 not found (404); 4 not allowed (401, 403: run
//! `microplane login`); 5 the service or gateway failed (5xx), or a MicroService failed or did not
//! become Ready in time.

pub mod cluster;
pub mod flags;
pub mod gateway;

use std::time::Duration;

use anyhow::Result;
use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};
use serde_json::Value;

/// What went wrong, for the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Exit 2.
    #[error("{0}")]
    Usage(String),
    /// Exit 3.
    #[error("{0}")]
    NotFound(String),
    /// Exit 4.
    #[error("{0}")]
    Refused(String),
    /// Exit 5.
    #[error("{0}")]
    Failed(String),
}

impl Failure {
    /// The failure a gateway error answer (`{id, code, detail, status}`) stands for.
    pub fn from_error(status: u16, body: &Value) -> Self {
        let detail = body["detail"]
            .as_str()
            .map_or_else(|| format!("HTTP {status}"), str::to_string);
        match status {
            400 | 405 | 413 | 415 => Failure::Usage(detail),
            404 => Failure::NotFound(detail),
            401 => Failure::Refused(format!("{detail} (sign in: microplane login)")),
            403 => Failure::Refused(detail),
            _ => Failure::Failed(detail),
        }
    }

    fn code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::NotFound(_) => 3,
            Failure::Refused(_) => 4,
            Failure::Failed(_) => 5,
        }
    }
}

/// `-o`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Columns for people.
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

#[derive(Parser)]
#[command(
    name = "microplane",
    version,
    about = "Run and call microservices on Microplane",
    after_help = "Any other command calls an endpoint: `microplane helloworld call --name John` (see `microplane endpoints`)."
)]
struct Cli {
    /// The gateway's URL.
    #[arg(
        long,
        env = "MICROPLANE_GATEWAY",
        default_value = "http://localhost:8080",
        global = true
    )]
    gateway: String,
    /// The tenant (its namespace). Calls without it go to the tenant the gateway serves on its host.
    #[arg(short = 'n', long = "namespace", env = "MICROPLANE_NAMESPACE", global = true)]
    namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// The Config's document, or the value at a dot-separated path.
    Get {
        /// The Config.
        name: String,
        /// E.g. `helloworld.greeting`.
        path: Option<String>,
    },
    /// Sets the value at a dot-separated path (JSON, or text); creates the Config when missing.
    Set {
        /// The Config.
        name: String,
        /// E.g. `helloworld.greeting`.
        path: String,
        /// The value.
        value: String,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run a service from git (`<url>[@branch|tag|commit]`) or an image, and follow it to Ready.
    Run {
        /// A git URL with an optional `@ref`; or use --image.
        source: Option<String>,
        /// A prebuilt image instead of a git source.
        #[arg(long, conflicts_with = "source")]
        image: Option<String>,
        /// The MicroService name (default: the last path segment of the source or image).
        #[arg(long)]
        name: Option<String>,
        /// Sub-directory of the repository holding the service.
        #[arg(long)]
        path: Option<String>,
        /// Build strategy: Auto, Go, Rust or Dockerfile.
        #[arg(long)]
        strategy: Option<String>,
        /// Grpc (default) or Http.
        #[arg(long)]
        protocol: Option<String>,
        /// How long to wait for Ready.
        #[arg(long, default_value_t = 600)]
        timeout_seconds: u64,
    },
    /// Delete a service.
    Kill {
        /// The MicroService.
        name: String,
    },
    /// List the tenant's services.
    Services,
    /// A service's phase, readiness, endpoints, URL, commit and image.
    Status {
        /// The MicroService.
        name: String,
    },
    /// A service's logs, or its last build's (--build).
    Logs {
        /// The MicroService.
        name: String,
        /// The last build's output instead.
        #[arg(long)]
        build: bool,
        /// Keep following.
        #[arg(short, long)]
        follow: bool,
    },
    /// Call an endpoint with a JSON body: `microplane call helloworld Helloworld.Call '{"name":"John"}'`.
    Call {
        /// The service.
        service: String,
        /// The endpoint (`Helloworld.Call`) or its path segment (`call`).
        endpoint: String,
        /// The request body (JSON); `{}` when absent.
        body: Option<String>,
    },
    /// The endpoints this caller may call, from the tenant's OpenAPI document.
    Endpoints,
    /// The tenants of the cluster.
    Tenants,
    /// The tenant's AuthRules, in evaluation order.
    Rules,
    /// Read or change a Config (`config get <name> [path]`, `config set <name> <path> <value>`).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Sign in with an account's id and secret (the secret from --secret or stdin).
    Login {
        /// The account id.
        #[arg(long)]
        id: String,
        /// The secret; read from stdin when absent.
        #[arg(long, env = "MICROPLANE_SECRET")]
        secret: Option<String>,
    },
    /// Forget the login for this gateway and tenant.
    Logout,
    /// Shell completions: `microplane completions bash > /etc/bash_completion.d/microplane`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    #[command(external_subcommand)]
    Endpoint(Vec<String>),
}

/// The program: parses the arguments, runs the command, returns the exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let code = e.downcast_ref::<Failure>().map_or(1, Failure::code);
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(code)
        }
    }
}

fn tenant(cli: &Cli) -> String {
    cli.namespace.clone().unwrap_or_else(|| "micro".to_string())
}

async fn kube() -> Result<kube::Client> {
    kube::Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("no cluster: {e} (set KUBECONFIG, or see docs/cli.md)"))
}

fn default_name(source: &str) -> String {
    let last = if source.contains('/') {
        source.rsplit('/').next().unwrap_or(source)
    } else {
        source.rsplit(':').next().unwrap_or(source)
    };
    // An image's `:tag` or `@digest`, a source's `@ref`.
    let last = last.split(['@', ':']).next().unwrap_or(last);
    last.trim_end_matches(".git").to_ascii_lowercase()
}

async fn run(cli: Cli) -> Result<()> {
    let target = || gateway::Target::new(&cli.gateway, cli.namespace.clone());
    match &cli.command {
        Command::Run {
            source,
            image,
            name,
            path,
            strategy,
            protocol,
            timeout_seconds,
        } => {
            let (git, reference) = match source {
                Some(s) => {
                    let (u, r) = cluster::split_ref(s);
                    (Some(u), r)
                }
                None => (None, None),
            };
            let Some(from) = git.as_deref().or(image.as_deref()) else {
                anyhow::bail!(Failure::Usage("give a git URL or --image".into()));
            };
            let name = name
                .clone()
                .or_else(|| path.as_deref().map(default_name))
                .unwrap_or_else(|| default_name(from));
            let spec = cluster::RunSpec {
                name,
                image: image.clone(),
                git,
                reference,
                path: path.clone(),
                strategy: strategy.clone(),
                protocol: protocol.clone(),
            };
            cluster::run(
                &kube().await?,
                &tenant(&cli),
                &spec,
                Duration::from_secs(*timeout_seconds),
            )
            .await
        }
        Command::Kill { name } => cluster::kill(&kube().await?, &tenant(&cli), name).await,
        Command::Services => cluster::services(&kube().await?, &tenant(&cli), cli.output).await,
        Command::Status { name } => cluster::status(&kube().await?, &tenant(&cli), name, cli.output).await,
        Command::Logs { name, build, follow } => {
            cluster::logs(&kube().await?, &tenant(&cli), name, *build, *follow).await
        }
        Command::Call {
            service,
            endpoint,
            body,
        } => {
            let t = target()?;
            let body: Value = match body {
                Some(b) => serde_json::from_str(b).map_err(|e| Failure::Usage(format!("the body is not JSON: {e}")))?,
                None => Value::Object(Default::default()),
            };
            let words = match endpoint.split_once('.') {
                // `Helloworld.Call`: find it by operationId in the document.
                Some(_) => {
                    let doc = t.document().await?;
                    let ops = flags::operations(&doc);
                    let id = format!("{service}.{endpoint}");
                    let op = ops.iter().find(|o| o.id == id).ok_or_else(|| {
                        Failure::NotFound(format!("{id} is not an endpoint you may call (microplane endpoints)"))
                    })?;
                    op.path.clone()
                }
                None => format!("/{service}/{endpoint}"),
            };
            t.call(&words, &body, cli.output != Output::Json).await
        }
        Command::Endpoints => {
            let doc = target()?.document().await?;
            let ops = flags::operations(&doc);
            match cli.output {
                Output::Table => {
                    let rows: Vec<[String; 3]> = ops
                        .iter()
                        .map(|o| {
                            [
                                o.path.trim_start_matches('/').replace('/', " "),
                                o.id.clone(),
                                [o.streaming.then_some("stream"), o.secured.then_some("token")]
                                    .into_iter()
                                    .flatten()
                                    .collect::<Vec<_>>()
                                    .join(","),
                            ]
                        })
                        .collect();
                    table(&["COMMAND", "ENDPOINT", "NOTES"], &rows);
                    Ok(())
                }
                o => print_value(&doc, o),
            }
        }
        Command::Login { id, secret } => {
            let secret = match secret {
                Some(s) => s.clone(),
                None => {
                    let mut s = String::new();
                    std::io::stdin().read_line(&mut s)?;
                    s.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            target()?.login(id, &secret).await?;
            eprintln!("signed in as {id}");
            Ok(())
        }
        Command::Logout => target()?.logout(),
        Command::Tenants => cluster::tenants(&kube().await?, cli.output).await,
        Command::Rules => cluster::rules(&kube().await?, &tenant(&cli), cli.output).await,
        Command::Config(ConfigCommand::Get { name, path }) => {
            cluster::config_get(&kube().await?, &tenant(&cli), name, path.as_deref(), cli.output).await
        }
        Command::Config(ConfigCommand::Set { name, path, value }) => {
            cluster::config_set(&kube().await?, &tenant(&cli), name, path, value).await
        }
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "microplane", &mut std::io::stdout());
            Ok(())
        }
        Command::Endpoint(words) => endpoint_command(&cli, words).await,
    }
}

/// `microplane <service> [<endpoint>…] [--field value…] [--help]`.
async fn endpoint_command(cli: &Cli, words: &[String]) -> Result<()> {
    let split = words.iter().position(|w| w.starts_with('-')).unwrap_or(words.len());
    let (path, args) = words.split_at(split);
    let t = gateway::Target::new(&cli.gateway, cli.namespace.clone())?;
    let doc = t.document().await?;
    let ops = flags::operations(&doc);
    let help = args.iter().any(|a| a == "--help" || a == "-h");
    let Some(op) = flags::find(&ops, path) else {
        let prefix = format!("/{}", path.join("/"));
        let near: Vec<String> = ops
            .iter()
            .filter(|o| o.path.starts_with(&format!("{prefix}/")) || path.is_empty())
            .map(|o| format!("  microplane {}", o.path.trim_start_matches('/').replace('/', " ")))
            .collect();
        if help && !near.is_empty() {
            println!("Endpoints of {}:\n{}", path.join(" "), near.join("\n"));
            return Ok(());
        }
        let hint = if near.is_empty() {
            "see `microplane endpoints` for what you may call".to_string()
        } else {
            format!("did you mean:\n{}", near.join("\n"))
        };
        // The document holds only what this caller may call: an endpoint that needs an account is
        // not in an anonymous caller's.
        let hint = if t.signed_in() {
            hint
        } else {
            format!("{hint}; endpoints that need an account show once you sign in (microplane login)")
        };
        anyhow::bail!(Failure::NotFound(format!("no endpoint {}: {hint}", path.join(" "))));
    };
    if help {
        print!("{}", flags::help(op));
        return Ok(());
    }
    let body = flags::request(&op.request, args).map_err(|e| Failure::Usage(e.to_string()))?;
    t.call(&op.path, &body, cli.output != Output::Json).await
}

/// Prints rows under a header, in columns.
pub fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Prints `v` as JSON or YAML.
pub fn print_value(v: &Value, out: Output) -> Result<()> {
    match out {
        Output::Yaml => print!("{}", serde_yaml::to_string(v)?),
        _ => println!("{}", serde_json::to_string_pretty(v)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_default_to_the_sources_last_segment() {
        assert_eq!(default_name("https://github.com/acme/Hello-World.git"), "hello-world");
        assert_eq!(default_name("localhost:5000/micro/helloworld:1.0"), "helloworld");
        assert_eq!(default_name("ghcr.io/acme/api@sha256:abc"), "api");
        assert_eq!(default_name("services/helloworld"), "helloworld");
    }

    #[test]
    fn gateway_errors_map_to_exit_codes() {
        let e = |s: u16| Failure::from_error(s, &serde_json::json!({"detail": "x"})).code();
        assert_eq!((e(400), e(404), e(401), e(403), e(500), e(503)), (2, 3, 4, 4, 5, 5));
        assert!(
            Failure::from_error(401, &serde_json::json!({}))
                .to_string()
                .contains("microplane login")
        );
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
