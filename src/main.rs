use convene::config::Settings;
use convene::startup::Application;
use convene::telemetry;
use std::process::ExitCode;

/// mimalloc instead of glibc's allocator: signaling buffers are allocated on one worker thread
/// and freed on another, and glibc's arena locks and chunk merging were 14-17 % of the relay's
/// samples (bench/analysis.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const VERSION: &str = env!("CARGO_PKG_VERSION");

const USAGE: &str = "\
Convene: a realtime-conferencing control plane (rooms REST API, signaling, SFU).

Usage:
  convene                 run the service (the same as `convene serve`)
  convene serve           run the service
  convene config check    load the settings as the service would, print them with secrets
                          redacted, and exit 0; exit 2 naming the setting when one is invalid
  convene --help, -h      print this help
  convene --version, -V   print the version

Settings come from config/default.toml (compiled in), then the TOML file named by
CONVENE_CONFIG, then CONVENE_* environment variables: every setting `name` has the
variable CONVENE_NAME, e.g. CONVENE_BIND=0.0.0.0:8080, CONVENE_API_KEYS=key1,key2,
CONVENE_REDIS_URL=redis://127.0.0.1:6379/0, CONVENE_LOG_FORMAT=json. The table of every
setting is in README.md (\"Configuration\"). `convene config check` prints them all.

With no API key configured the service generates one for this run and prints it once on
stdout. The REST API is described by GET /api/openapi.json (docs/api.md).
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Serve,
    Help,
    Version,
    ConfigCheck,
}

/// The command of the arguments (without the program name), or the message for a command
/// line that names none.
fn parse(args: &[String]) -> Result<Command, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] | ["serve"] => Ok(Command::Serve),
        [first, ..] if ["-h", "--help", "help"].contains(first) => Ok(Command::Help),
        [one] if ["-V", "--version", "version"].contains(one) => Ok(Command::Version),
        ["config", "check"] => Ok(Command::ConfigCheck),
        ["config", ..] => Err("`config` takes one subcommand: `config check`".into()),
        [other, ..] => Err(format!("unknown command or option '{other}'")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok(Command::Serve) => actix_web::rt::System::new().block_on(serve()),
        Ok(Command::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("convene {VERSION}");
            ExitCode::SUCCESS
        }
        Ok(Command::ConfigCheck) => config_check(),
        Err(message) => {
            eprintln!("convene: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// `convene config check`: the settings as the service would load them, secrets redacted.
fn config_check() -> ExitCode {
    match Settings::load() {
        Ok(settings) => {
            println!(
                "# convene {VERSION}: the effective settings (defaults, CONVENE_CONFIG, CONVENE_* variables); secrets redacted"
            );
            print!("{}", settings.redacted_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("convene: {e}");
            ExitCode::from(2)
        }
    }
}

async fn serve() -> ExitCode {
    let mut settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("convene: {e}");
            return ExitCode::from(2);
        }
    };
    let json = settings.json_logs();
    telemetry::init(&settings.log_level, json);
    generate_missing_secrets(&mut settings);
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("start-up failed: {e}");
            // In JSON mode every line is JSON: the log line above says it all.
            if !json {
                eprintln!("convene: start-up failed: {e}");
            }
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
/// The API key is printed once, on stdout (a JSON line in JSON log mode), and never logged.
fn generate_missing_secrets(settings: &mut Settings) {
    if settings.api_keys.is_empty() {
        let key = random_hex(24);
        println!(
            "{}",
            telemetry::generated_key_line(&key, settings.json_logs())
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Result<Command, String> {
        parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn commands() {
        assert_eq!(parsed(&[]), Ok(Command::Serve));
        assert_eq!(parsed(&["serve"]), Ok(Command::Serve));
        for help in [&["--help"][..], &["-h"], &["help"], &["--help", "config"]] {
            assert_eq!(parsed(help), Ok(Command::Help), "{help:?}");
        }
        assert_eq!(parsed(&["--version"]), Ok(Command::Version));
        assert_eq!(parsed(&["-V"]), Ok(Command::Version));
        assert_eq!(parsed(&["config", "check"]), Ok(Command::ConfigCheck));
        for bad in [
            &["--verbose"][..],
            &["config"],
            &["config", "show"],
            &["config", "check", "x"],
            &["serve", "now"],
            &["--version", "x"],
        ] {
            assert!(parsed(bad).is_err(), "{bad:?}");
        }
    }
}
