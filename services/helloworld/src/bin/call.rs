//! `helloworld-call ADDRESS NAME`: calls `Helloworld.Call` at `ADDRESS` (`host:port`) and prints the
//! message — a client for trying a helloworld pod before the gateway exists.

use std::process::ExitCode;

use helloworld::pb::CallRequest;
use helloworld::pb::helloworld_client::HelloworldClient;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(addr), name) = (args.next(), args.next().unwrap_or_else(|| "World".into())) else {
        eprintln!("usage: helloworld-call ADDRESS [NAME]   (e.g. 10.233.0.2:8080 John)");
        return ExitCode::from(2);
    };
    let client = match HelloworldClient::connect(format!("http://{addr}")).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot connect to {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.clone().call(CallRequest { name }).await {
        Ok(reply) => {
            println!("{{\"message\": {:?}}}", reply.into_inner().message);
            ExitCode::SUCCESS
        }
        Err(status) => {
            eprintln!("{}: {}", status.code(), status.message());
            ExitCode::FAILURE
        }
    }
}
