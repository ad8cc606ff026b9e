//! Compiles `bastion/v1/control.proto` with a vendored `protoc`, so building
//! needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    // No generated `ControlClient::connect(url)`: clients reach the daemon over a
    // Unix socket with `ControlClient::new(channel)`, and that constructor would
    // clash with the `Connect` RPC.
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_protos(&["bastion/v1/control.proto"], &["."])?;
    println!("cargo:rerun-if-changed=bastion/v1/control.proto");
    Ok(())
}
