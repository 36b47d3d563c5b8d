//! terraform-provider-tandem: started by Terraform (go-plugin handshake), or with `--debug` by hand.

use std::process::ExitCode;

use tandem_provider::plugin::{self, ServeOptions};
use tandem_provider::server::TandemProvider;
use tracing_subscriber::EnvFilter;

/// Terraform's TF_LOG levels mapped onto our tracing filter (logs go to stderr, which Terraform captures).
fn log_filter() -> EnvFilter {
    if let Ok(f) = std::env::var("TANDEM_LOG") {
        return EnvFilter::new(f);
    }
    let level = match std::env::var("TF_LOG_PROVIDER").or_else(|_| std::env::var("TF_LOG")).as_deref() {
        Ok("TRACE") | Ok("trace") => "trace",
        Ok("DEBUG") | Ok("debug") => "debug",
        Ok("INFO") | Ok("info") => "info",
        Ok("WARN") | Ok("warn") => "warn",
        _ => "error",
    };
    EnvFilter::new(format!("tandem_provider={level},warn"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt().with_env_filter(log_filter()).with_writer(std::io::stderr).with_ansi(false).init();
    let debug = std::env::args().skip(1).any(|a| a == "--debug" || a == "-debug");
    if let Some(other) = std::env::args().skip(1).find(|a| a != "--debug" && a != "-debug") {
        eprintln!("terraform-provider-tandem: unknown argument {other:?} (the only option is --debug)");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("terraform-provider-tandem: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(plugin::serve(TandemProvider::new(), ServeOptions { debug })) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("terraform-provider-tandem: [{}] {e}", e.code());
            ExitCode::FAILURE
        }
    }
}
