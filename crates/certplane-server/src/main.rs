//! `certplane`: one binary for the node (`server`, `dev`) and the operator/user CLI over the HTTP API.

use clap::Parser;

/// mimalloc instead of the system allocator: a node allocates and frees small buffers at a high rate
/// while it applies the log, and glibc's malloc spent about a tenth of a renewal sweep's CPU
/// (decision 0016).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // One process-wide TLS crypto provider for the HTTP client and the cluster's gRPC.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = certplane_server::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(certplane_server::cli::run(args));
    std::process::exit(code);
}
