//! The helloworld example service: `Helloworld.Call` greets a name, `Helloworld.Stream` greets it
//! several times. The greeting word comes from the config path `helloworld.greeting` (a `Config`
//! listed by the MicroService), so changing the Config changes the answer without a restart.
//!
//! The handlers' logic is plain functions on [`Helloworld`]; [`service`] wires them into an SDK
//! [`Service`] and [`run`] serves it from the environment.

use std::pin::Pin;

use microplane_sdk::config::Config;
use microplane_sdk::{Identity, Service, errors};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::pb::helloworld_server::HelloworldServer;
use crate::pb::{CallRequest, CallResponse, StreamRequest, StreamResponse};

pub mod pb {
    //! Generated from `proto/helloworld.proto` (package `helloworld`) by the build script.
    #![allow(missing_docs, clippy::all)]

    tonic::include_proto!("helloworld");

    /// The encoded `FileDescriptorSet` of `helloworld.proto`, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/helloworld_descriptor.bin"));
}

/// The service's default name (`MICRO_SERVICE_NAME` overrides it).
pub const NAME: &str = "helloworld";
/// The config path of the greeting word.
pub const GREETING_PATH: &str = "helloworld.greeting";
/// The greeting word when the config has none.
pub const DEFAULT_GREETING: &str = "Hello";
/// The most messages one `Stream` call may ask for.
pub const MAX_STREAM_COUNT: i64 = 1000;
/// Error id of `Helloworld.Call`.
pub const CALL_ERROR_ID: &str = "helloworld.call";
/// Error id of `Helloworld.Stream`.
pub const STREAM_ERROR_ID: &str = "helloworld.stream";

/// The `Helloworld` handler.
#[derive(Clone, Debug)]
pub struct Helloworld {
    config: Config,
}

impl Helloworld {
    /// A handler reading its greeting from `config`.
    pub fn new(config: Config) -> Self {
        Self { config }
    }

    /// The current greeting word: the non-blank string at `helloworld.greeting`, else `Hello`.
    pub fn greeting(&self) -> String {
        match self.config.get_as::<String>(GREETING_PATH) {
            Ok(Some(greeting)) if !greeting.trim().is_empty() => greeting.trim().to_string(),
            Ok(_) => DEFAULT_GREETING.to_string(),
            Err(err) => {
                tracing::debug!(error = %err, "using the default greeting");
                DEFAULT_GREETING.to_string()
            }
        }
    }

    /// `Helloworld.Call`: `<greeting> <name>`; a blank name is a bad request.
    pub fn call_response(&self, request: &CallRequest) -> Result<CallResponse, Status> {
        require_name(&request.name, CALL_ERROR_ID)?;
        Ok(CallResponse {
            message: format!("{} {}", self.greeting(), request.name),
        })
    }

    /// `Helloworld.Stream`: the message to send and how many times; a blank name or a count outside
    /// `0..=1000` is a bad request.
    pub fn stream_messages(&self, request: &StreamRequest) -> Result<(StreamResponse, usize), Status> {
        require_name(&request.name, STREAM_ERROR_ID)?;
        let count = usize::try_from(request.count)
            .ok()
            .filter(|_| request.count <= MAX_STREAM_COUNT)
            .ok_or_else(|| {
                errors::bad_request(
                    STREAM_ERROR_ID,
                    format!("count must be from 0 to {MAX_STREAM_COUNT}, got {}", request.count),
                )
            })?;
        let message = format!("{} {}", self.greeting(), request.name);
        Ok((StreamResponse { message }, count))
    }
}

fn require_name(name: &str, id: &str) -> Result<(), Status> {
    if name.trim().is_empty() {
        return Err(errors::bad_request(id, "name is required"));
    }
    Ok(())
}

/// The stream of `Helloworld.Stream` responses.
pub type ResponseStream = Pin<Box<dyn Stream<Item = Result<StreamResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::helloworld_server::Helloworld for Helloworld {
    async fn call(&self, request: Request<CallRequest>) -> Result<Response<CallResponse>, Status> {
        let caller = Identity::from_request(&request).map(|identity| identity.id);
        tracing::debug!(caller = caller.as_deref().unwrap_or("anonymous"), "Helloworld.Call");
        self.call_response(request.get_ref()).map(Response::new)
    }

    type StreamStream = ResponseStream;

    async fn stream(&self, request: Request<StreamRequest>) -> Result<Response<Self::StreamStream>, Status> {
        let (message, count) = self.stream_messages(request.get_ref())?;
        // Lazily: each message is produced when the transport has room for it.
        let responses = std::iter::repeat_n(message, count).map(Ok);
        Ok(Response::new(Box::pin(tokio_stream::iter(responses))))
    }
}

/// Adds the `Helloworld` service and its descriptors to `base`, reading the greeting from `base`'s
/// configuration.
pub fn service(base: Service) -> Service {
    let handler = Helloworld::new(base.config().clone());
    base.file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .add_service(HelloworldServer::new(handler))
}

/// Serves helloworld from the environment until SIGTERM or SIGINT.
pub async fn run() -> Result<(), microplane_sdk::Error> {
    service(Service::new(NAME)?).run().await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use microplane_sdk::errors::MicroError;
    use pb::helloworld_server::Helloworld as _;
    use serde_json::json;
    use tokio_stream::StreamExt;
    use tonic::Code;

    use super::*;

    fn handler(config: serde_json::Value) -> Helloworld {
        Helloworld::new(Config::from_value(config))
    }

    fn call(name: &str) -> CallRequest {
        CallRequest { name: name.into() }
    }

    fn assert_bad_request(status: &Status, id: &str, detail: &str) {
        assert_eq!(status.code(), Code::InvalidArgument);
        let error = MicroError::from_status(status).unwrap();
        assert_eq!(
            (error.id.as_str(), error.code, error.status.as_str()),
            (id, 400, "Bad Request")
        );
        assert!(error.detail.contains(detail), "{}", error.detail);
    }

    #[test]
    fn greets_with_the_default_word() {
        let hello = handler(json!({}));
        assert_eq!(hello.call_response(&call("Alice")).unwrap().message, "Hello Alice");
        assert_eq!(Helloworld::new(Config::empty()).greeting(), "Hello");
    }

    #[test]
    fn greets_with_the_configured_word() {
        let hello = handler(json!({"helloworld": {"greeting": " Hi "}}));
        assert_eq!(hello.call_response(&call("Bob")).unwrap().message, "Hi Bob");
    }

    #[test]
    fn ignores_unusable_greetings() {
        for config in [
            json!({"helloworld": {"greeting": 42}}),
            json!({"helloworld": {"greeting": "  "}}),
            json!({"helloworld": {"greeting": null}}),
            json!({"helloworld": "Hi"}),
        ] {
            assert_eq!(handler(config.clone()).greeting(), "Hello", "{config}");
        }
    }

    #[test]
    fn blank_names_are_bad_requests() {
        let hello = handler(json!({}));
        for name in ["", " ", "\t\n"] {
            let status = hello.call_response(&call(name)).unwrap_err();
            assert_bad_request(&status, "helloworld.call", "name is required");
        }
    }

    #[test]
    fn stream_counts_are_bounded() {
        let hello = handler(json!({}));
        let request = |count| StreamRequest {
            name: "Eve".into(),
            count,
        };
        assert_eq!(hello.stream_messages(&request(0)).unwrap().1, 0);
        let (message, count) = hello.stream_messages(&request(1000)).unwrap();
        assert_eq!((message.message.as_str(), count), ("Hello Eve", 1000));
        for bad in [-1, 1001, i64::MIN, i64::MAX] {
            let status = hello.stream_messages(&request(bad)).unwrap_err();
            assert_bad_request(&status, "helloworld.stream", "count must be from 0 to 1000");
        }
        let blank = StreamRequest {
            name: String::new(),
            count: 1,
        };
        assert_bad_request(
            &hello.stream_messages(&blank).unwrap_err(),
            "helloworld.stream",
            "name is required",
        );
    }

    #[tokio::test]
    async fn grpc_handlers_answer() {
        let hello = handler(json!({"helloworld": {"greeting": "Hey"}}));
        let response = hello.call(Request::new(call("Ann"))).await.unwrap();
        assert_eq!(response.into_inner().message, "Hey Ann");

        let request = Request::new(StreamRequest {
            name: "Ann".into(),
            count: 3,
        });
        let messages: Vec<String> = hello
            .stream(request)
            .await
            .unwrap()
            .into_inner()
            .map(|r| r.unwrap().message)
            .collect()
            .await;
        assert_eq!(messages, ["Hey Ann"; 3]);
        let refused = hello.call(Request::new(call(""))).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
    }
}
