//! Compiles the sync protocol with protox (no `protoc` needed) into prost messages and tonic code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/microplane/sync/v1/sync.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
