//! What the AWS IoT Core connection samples share.
//!
//! Each sample is a thin binary: it parses its `Args` (which flatten the option groups in
//! [`args`]), builds one [`ConnectionSpec`] with a builder from [`spec`], and hands it to [`run`],
//! which connects, reports, disconnects and returns the exit code.
//!
//! - [`args`]: clap option groups, with the official AWS sample flag names as aliases.
//! - [`tls`]: rustls client configuration (ring provider, built-in or `--ca-file` roots, ALPN).
//! - [`custom_auth`]: the custom-authorizer MQTT username and token signing.
//! - `websocket` (feature `sigv4`): SigV4 presigning of the WebSocket upgrade, AWS credentials.
//! - [`connect`]: the connect-then-disconnect routine on rumqttc, MQTT 5 and 3.1.1.
//! - [`error`]: the error type and the `hint:` line for each failure.
//! - [`secrets`]: the logger that masks passwords, keys, tokens and signatures.
//!
//! Not for: publishing or subscribing (the samples only prove that a connection is accepted), and
//! not an AWS SDK (no usage metrics are sent).

pub mod args;
pub mod connect;
pub mod custom_auth;
pub mod endpoint;
pub mod error;
pub mod secrets;
pub mod spec;
pub mod tls;
#[cfg(feature = "sigv4")]
pub mod websocket;

use std::future::Future;
use std::process::ExitCode;

pub use connect::{ConnectionSpec, MqttVersion};
pub use error::{AuthMode, Error};

/// Run a sample: print the banner, build the spec, connect, report, disconnect.
///
/// Prints `<banner>`, a blank line, `Attempting to connect!` and `Connection attempt successful!`
/// on success (exit 0). On failure prints `Connection attempt failed: <cause>` and a `hint:` line
/// to standard error and exits 1 (2 for usage errors).
pub fn run<F>(banner: &str, mode: AuthMode, spec: F) -> ExitCode
where
    F: Future<Output = Result<ConnectionSpec, Error>>,
{
    secrets::init_logging();
    println!("{banner}");
    println!();

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                &Error::Other(format!("cannot start the async runtime: {e}")),
                mode,
            )
        }
    };
    let code = runtime.block_on(async {
        let spec = match spec.await {
            Ok(spec) => spec,
            Err(e) => return fail(&e, mode),
        };
        println!("Attempting to connect!");
        let session = match connect::connect(&spec).await {
            Ok(session) => session,
            Err(e) => return fail(&e, spec.mode),
        };
        println!("Connection attempt successful!");
        match session.disconnect().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e, spec.mode),
        }
    });
    // Dropping the runtime would wake and join its idle blocking thread (the one rumqttc's DNS
    // lookup ran on); the process is about to exit, so leave it be.
    runtime.shutdown_background();
    code
}

fn fail(e: &Error, mode: AuthMode) -> ExitCode {
    if matches!(e, Error::Usage(_)) {
        eprintln!("error: {}", e.cause());
    } else {
        eprintln!("Connection attempt failed: {}", e.cause());
    }
    eprintln!("hint: {}", secrets::redact(&e.hint(mode)));
    ExitCode::from(e.exit_code())
}
