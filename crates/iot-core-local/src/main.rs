//! The `iot-core-local` command: `init` creates a local account, `serve` runs the endpoint.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use iot_core_local::config::{Config, FILE_NAME};
use iot_core_local::init::{commands, init, InitOptions};
use iot_core_local::server::{start, ServeOptions};

/// A local AWS IoT Core endpoint: mTLS, SigV4 WebSockets, custom authorizers and iot:Connect
/// policies, in front of an embedded MQTT broker. Loopback only by default.
#[derive(Parser, Debug)]
#[command(
    name = "iot-core-local",
    version,
    after_help = "Start with `iot-core-local init`, then `iot-core-local serve`.\nEvery authentication decision is logged with its reason (RUST_LOG=info, the default)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a local account (CAs, certificates, keys, authorizers, access keys, policies) and
    /// print the commands that run every sample against it.
    Init {
        /// Folder for the account.
        #[arg(value_name = "DIR", default_value = "local-account")]
        dir: PathBuf,
        /// Overwrite an existing account in DIR.
        #[arg(long)]
        force: bool,
        /// Port of the listener that plays 443.
        #[arg(long, default_value_t = 8443)]
        port_443: u16,
        /// Port of the listener that plays 8883.
        #[arg(long, default_value_t = 8883)]
        port_8883: u16,
    },
    /// Run the endpoint until Ctrl-C.
    Serve {
        /// The account folder made by `init`.
        #[arg(long, value_name = "DIR", default_value = "local-account")]
        dir: PathBuf,
        /// Address to listen on [default: from the account, 127.0.0.1].
        #[arg(long, value_name = "IP")]
        bind: Option<IpAddr>,
        /// Port that plays 443 (0: any free port, printed) [default: from the account].
        #[arg(long, value_name = "PORT")]
        port_443: Option<u16>,
        /// Port that plays 8883 (0: any free port, printed) [default: from the account].
        #[arg(long, value_name = "PORT")]
        port_8883: Option<u16>,
        /// Bridge accepted connections to this MQTT broker (host:port) instead of the embedded one.
        #[arg(long, value_name = "HOST:PORT")]
        upstream: Option<String>,
        /// Answer refused MQTT 3.1.1 clients with CONNACK 0x05 (or 0x02) instead of closing the
        /// connection as AWS IoT Core does. For debugging.
        #[arg(long)]
        connack_on_v311_reject: bool,
        /// How long a client may take for each step: the TLS handshake, the WebSocket upgrade
        /// request, the CONNECT packet.
        #[arg(long, value_name = "SECONDS", default_value_t = 10,
              value_parser = clap::value_parser!(u64).range(1..=600))]
        step_timeout: u64,
        /// Most connections accepted but not yet authenticated; more are closed as soon as
        /// they are accepted [default: from the account, 512].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        max_pending: Option<u64>,
        /// AWS IoT Core's publish quota: at most N PUBLISH per second per connection, inbound
        /// and outbound together; over it, inbound ones are discarded (no PUBACK), QoS 0
        /// deliveries dropped, QoS 1 deliveries held to the next second. 0: no quota (for
        /// throughput measurements). Not applied with --upstream.
        #[arg(long, value_name = "N", default_value_t = iot_core_local::broker::quota::DEFAULT_PUBLISH_QUOTA)]
        publish_quota: u32,
    },
}

/// Decisions at info.
const DEFAULT_LOG: &str = "info";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_LOG.to_string());
    env_logger::Builder::new()
        .parse_filters(&filter)
        .format(|buf, record| {
            use std::io::Write;
            let style = buf.default_level_style(record.level());
            writeln!(
                buf,
                "[{} {style}{:<5}{style:#} {}] {}",
                buf.timestamp(),
                record.level(),
                record.target(),
                OneLine(&record.args().to_string())
            )
        })
        .init();
    match cli.command {
        Command::Init {
            dir,
            force,
            port_443,
            port_8883,
        } => {
            let opts = InitOptions {
                dir: dir.clone(),
                force,
                port_443,
                port_8883,
            };
            match init(&opts) {
                Ok(config) => {
                    let abs = std::fs::canonicalize(&dir).unwrap_or(dir);
                    println!("Created a local AWS IoT Core account in {}", abs.display());
                    println!("  {FILE_NAME}: region, endpoint, certificates, authorizers, access keys, policies");
                    println!(
                        "\nStart the endpoint:\n  cargo run -p iot-core-local -- serve --dir {}\n",
                        abs.display()
                    );
                    println!("Then, in another terminal:\n");
                    print!("{}", commands(&config, &abs));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Serve {
            dir,
            bind,
            port_443,
            port_8883,
            upstream,
            connack_on_v311_reject,
            step_timeout,
            max_pending,
            publish_quota,
        } => {
            let opts = ServeOptions {
                bind,
                port_443,
                port_8883,
                upstream,
                connack_on_v311_reject: connack_on_v311_reject.then_some(true),
                step_deadline: Some(std::time::Duration::from_secs(step_timeout)),
                max_pending: max_pending.and_then(|n| usize::try_from(n).ok()),
                publish_quota: Some(publish_quota),
                ..ServeOptions::default()
            };
            serve(dir, opts)
        }
    }
}

fn serve(dir: PathBuf, opts: ServeOptions) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        if !dir.join(FILE_NAME).exists() {
            eprintln!("error: no account in {} (run `iot-core-local init {}` first)", dir.display(), dir.display());
            return ExitCode::from(2);
        }
        let running = match start(&dir, &opts).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        // Listen for Ctrl-C before saying "ready", so that a stop request is never missed.
        let stop = match StopSignal::new() {
            Ok(stop) => stop,
            Err(e) => {
                eprintln!("error: cannot listen for Ctrl-C: {e}");
                return ExitCode::from(1);
            }
        };
        let region = match Config::load(&dir) {
            Ok(config) => config.region,
            Err(e) => {
                eprintln!("error: {e}");
                running.shutdown().await;
                return ExitCode::from(1);
            }
        };
        println!(
            "iot-core-local serving {} ({region})\n  443 listener:  {} (ALPN x-amzn-mqtt-ca: mTLS; mqtt: custom auth; none or http/1.1: WebSocket)\n  8883 listener: {} (mTLS)",
            dir.display(),
            running.addr_443,
            running.addr_8883
        );
        println!("ready port_443={} port_8883={}", running.addr_443.port(), running.addr_8883.port());
        stop.wait().await;
        running.shutdown().await;
        println!("stopped");
        ExitCode::SUCCESS
    })
}

/// A log message kept on one line. Client text is escaped where it is formatted
/// ([`iot_core_local::logsafe`]); this is the backstop for any that was not, and for other
/// crates' messages: a control character is written as its escape (`\n`, `\u{1b}`), so no record
/// can start a forged line. Idempotent on escaped text, which holds no control characters.
struct OneLine<'a>(&'a str);

impl std::fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Ctrl-C (SIGINT), or SIGTERM on Unix, registered when created.
struct StopSignal {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignal {
    fn new() -> std::io::Result<StopSignal> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(StopSignal {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignal {})
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::OneLine;

    #[test]
    fn a_log_message_stays_on_one_line() {
        let forged = "client 'a\n127.0.0.1:1 [443 mtls]: allowed: FORGED'\r\u{1b}[2K";
        let line = OneLine(forged).to_string();
        assert_eq!(
            line,
            "client 'a\\n127.0.0.1:1 [443 mtls]: allowed: FORGED'\\r\\u{1b}[2K"
        );
        // Already escaped text is left as it is.
        assert_eq!(OneLine(&line).to_string(), line);
    }
}
