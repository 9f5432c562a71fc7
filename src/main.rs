use convene::config::Settings;
use convene::startup::Application;
use convene::telemetry;
use std::process::ExitCode;

/// mimalloc instead of glibc's allocator: signaling buffers are allocated on one worker thread
/// and freed on another, and glibc's arena locks and chunk merging were 14-17 % of the relay's
/// samples (bench/analysis.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> ExitCode {
    let mut settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("convene: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.log_level, settings.json_logs());
    generate_missing_secrets(&mut settings);
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("start-up failed: {e}");
            eprintln!("convene: start-up failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = app.metrics_addr() {
        tracing::info!("metrics on {addr}");
    }
    tracing::info!("listening on {}", app.local_addr());
    match app.run_until_stopped().await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("server failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// With no API key or token secret configured, makes them up for this run and says so.
/// The API key is printed once, on stdout, and never logged.
fn generate_missing_secrets(settings: &mut Settings) {
    if settings.api_keys.is_empty() {
        let key = random_hex(24);
        println!("No API key configured (CONVENE_API_KEYS): generated one for this run: {key}");
        settings.api_keys = vec![key];
    }
    if settings.token_secret.is_empty() {
        tracing::warn!(
            "no token secret configured (CONVENE_TOKEN_SECRET): generated one; room tokens will not survive a restart"
        );
        settings.token_secret = random_hex(32);
        settings.token_secret_generated = true;
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random number generator");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
