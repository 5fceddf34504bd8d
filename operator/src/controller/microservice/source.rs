//! The source step of a MicroService with `spec.source`: resolve the git source to a commit, build
//! the commit's image with a Job (or reuse an image already built from it), and say what the
//! Deployment runs meanwhile (the last good build while a new one builds or fails).

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use microplane_crds::{BuiltImage, MicroService, Source};

use crate::Result;
use crate::context::Context;
use crate::source::git::{Credentials, SourceError};
use crate::source::{self, job};
use microplane_crds::Reason;

/// Builds kept in `status.builds`.
pub const HISTORY: usize = 10;

/// Where a source stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceState {
    /// Not resolved yet: the network is about to be used.
    Resolving,
    /// The source cannot be resolved (or the spec cannot be used).
    Failed(SourceError),
    /// The commit's image is being built by a Job.
    Building {
        /// Commit.
        commit: String,
        /// Job name.
        job: String,
    },
    /// The build of the commit failed.
    BuildFailed {
        /// Commit.
        commit: String,
        /// What failed, with the build log's tail.
        message: String,
    },
    /// The commit's image exists.
    Built {
        /// Commit.
        commit: String,
        /// Digest-pinned image.
        image: String,
    },
}

/// What a Deployment runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// Image.
    pub image: String,
    /// `MICRO_SERVICE_VERSION`: the commit.
    pub version: String,
}

/// The outcome of the source step.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Where the source stands.
    pub state: SourceState,
    /// What the Deployment runs: the current commit's image once built, else the last good one.
    pub run: Option<Run>,
    /// `status.builds`.
    pub builds: Vec<BuiltImage>,
    /// When to look again without a change (poll interval, retry, build progress).
    pub again_in: Option<Duration>,
}

/// The image the MicroService ran last (from its status), kept while a new commit builds or fails.
pub fn running(ms: &MicroService) -> Option<Run> {
    let st = ms.status.as_ref()?;
    Some(Run {
        image: st.image.clone()?,
        version: st.commit.clone()?,
    })
}

/// Whether resolving `ms` now needs the network (nothing cached for its current source).
pub fn needs_resolution(ms: &MicroService, source: &Source, ctx: &Context) -> bool {
    let key = format!("{}/{}", ms.namespace().unwrap_or_default(), ms.name_any());
    let secret = source.git.secret_ref.as_ref().map(|s| s.name.as_str());
    source::request(source).is_ok_and(|req| !ctx.resolver.known(&key, &req, secret))
}

async fn read_secret(ctx: &Context, namespace: &str, name: &str) -> Result<Secret, SourceError> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(SourceError::new(
            Reason::SecretNotFound,
            format!("Secret {name} (source.git.secretRef) not found in namespace {namespace}"),
        )),
        Err(e) => Err(SourceError::new(
            Reason::SecretNotFound,
            format!("cannot read Secret {name}: {e}"),
        )),
    }
}

/// Resolves, builds and chooses what runs.
pub async fn plan(ms: &MicroService, source: &Source, ctx: &Context, name: &str, namespace: &str) -> Result<Plan> {
    let running = running(ms);
    let mut builds = ms.status.as_ref().map(|s| s.builds.clone()).unwrap_or_default();
    let failed = |e: SourceError, builds: Vec<BuiltImage>, again_in| Plan {
        state: SourceState::Failed(e),
        run: running.clone(),
        builds,
        again_in,
    };
    let req = match source::request(source) {
        Ok(r) => r,
        Err(e) => return Ok(failed(e, builds, None)),
    };
    let secret = source.git.secret_ref.as_ref().map(|s| s.name.clone());
    let poll = source
        .git
        .poll_interval
        .as_deref()
        .and_then(|s| microplane_crds::Duration::parse(s).ok())
        // The CRD refuses less than 5 s; an object stored before that rule polls no faster.
        .map(|d| d.get().max(source::MIN_POLL_INTERVAL));
    let credentials = async {
        match &secret {
            None => Ok(Credentials::None),
            Some(s) => {
                let secret = read_secret(ctx, namespace, s).await?;
                Credentials::from_secret_data(&secret.data.unwrap_or_default())
            }
        }
    };
    let answer = ctx
        .resolver
        .resolve(
            (namespace, name),
            req.clone(),
            secret.as_deref(),
            poll,
            credentials,
            &ctx.settings.source,
        )
        .await;
    let resolved = match answer.outcome {
        Ok(r) => r,
        Err(e) => return Ok(failed(e, builds, answer.again_in)),
    };

    let settings = &ctx.settings.source.build;
    let build = job::Build {
        tenant: namespace,
        service: name,
        url: &req.url,
        commit: &resolved.commit,
        path: &req.path,
        strategy: resolved.strategy,
        dockerfile: &req.dockerfile,
        credentials: None,
    };
    let job_name = build.job_name(settings);
    let built = |image: String, builds: Vec<BuiltImage>| Plan {
        state: SourceState::Built {
            commit: resolved.commit.clone(),
            image: image.clone(),
        },
        run: Some(Run {
            image,
            version: resolved.commit.clone(),
        }),
        builds,
        again_in: answer.again_in,
    };
    // Built before (a rollback, or a restart): no build at all.
    if let Some(b) = builds.iter().find(|b| b.build == job_name) {
        return Ok(built(b.image.clone(), builds.clone()));
    }
    let current = ctx
        .stores
        .jobs
        .get(&ObjectRef::new(&job_name).within(&settings.namespace));
    let state = match current {
        None => {
            let credentials = secret.as_ref().map(|_| job::credentials_name(&job_name));
            let desired = job::desired(
                &job::Build {
                    credentials: credentials.as_deref(),
                    ..build.clone()
                },
                settings,
            );
            let created: Job = ctx.apply(super::CONTROLLER, None, &desired).await?;
            if let Some(s) = &secret {
                // The clone step mounts a copy of the credentials, owned by the Job.
                match read_secret(ctx, namespace, s).await {
                    Ok(user_secret) => {
                        if let Some(copy) = job::credentials_secret(&created, &user_secret.data.unwrap_or_default()) {
                            ctx.apply::<Secret>(super::CONTROLLER, None, &copy).await?;
                        }
                    }
                    Err(e) => return Ok(failed(e, builds, Some(Duration::from_secs(30)))),
                }
            }
            tracing::info!(%namespace, %name, commit = %resolved.commit, job = %job_name, "build started");
            SourceState::Building {
                commit: resolved.commit.clone(),
                job: job_name,
            }
        }
        Some(job) => {
            let pods: Vec<std::sync::Arc<Pod>> = ctx
                .stores
                .build_pods
                .state()
                .into_iter()
                .filter(|p| {
                    p.namespace().as_deref() == Some(settings.namespace.as_str())
                        && p.labels().get("job-name").map(String::as_str) == Some(job_name.as_str())
                })
                .collect();
            let pods: Vec<&Pod> = pods.iter().map(AsRef::as_ref).collect();
            match job::outcome(&job, &pods) {
                job::Outcome::Running => SourceState::Building {
                    commit: resolved.commit.clone(),
                    job: job_name,
                },
                job::Outcome::Succeeded(digest) => {
                    let image = format!("{}@{digest}", build.repository(settings));
                    builds.retain(|b| b.commit != resolved.commit);
                    builds.insert(
                        0,
                        BuiltImage {
                            commit: resolved.commit.clone(),
                            image: image.clone(),
                            build: job_name,
                        },
                    );
                    builds.truncate(HISTORY);
                    return Ok(built(image, builds));
                }
                job::Outcome::Failed(message) => SourceState::BuildFailed {
                    commit: resolved.commit.clone(),
                    message: format!("build Job {}/{job_name}: {message}", settings.namespace),
                },
            }
        }
    };
    Ok(Plan {
        state,
        run: running,
        builds,
        again_in: answer.again_in,
    })
}
