//! Generates the gRPC server of Dapr's lock API (`proto/dapr.proto`) with tonic, from a
//! descriptor set compiled by protox — pure Rust, so no `protoc` need be installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/dapr.proto");
    let descriptors = protox::compile(["dapr.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .compile_fds(descriptors)?;
    Ok(())
}
