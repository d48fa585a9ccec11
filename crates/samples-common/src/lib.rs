//! What the AWS IoT Core connection samples share.
//!
//! Each sample is a thin binary: it parses its `Args` (which flatten the option groups in
//! [`args`]) with [`args::parse`], builds one [`ConnectionSpec`] with a function of [`spec`], and
//! hands it to [`run`], which connects, reports, disconnects and returns the exit code. A failure
//! is one [`Error`]: one line saying what failed, one `hint:` line saying what to check.
//!
//! Public, for the samples: [`run`], [`args`], [`spec`], [`AuthMode`], [`Error`] (and the types
//! its variants carry). Every sample can go through an HTTP proxy: the options are in
//! [`args::ProxyArgs`], inside [`args::ConnectionArgs`]. Public, for the tests that check iot-core-local against this client:
//! [`custom_auth`] (the custom-authorizer username and token signing) and `websocket::presign`
//! (SigV4 presigning, feature `sigv4`). Everything else (TLS setup, the rumqttc runner, the
//! secret mask) is private.
//!
//! The SigV4 presigner here and the SigV4 verifier of iot-core-local share no code, in
//! particular no canonicalisation: each is written against the AWS specification on its own, and
//! the tests check one against the other. A shared helper would let one mistake pass on both
//! sides.
//!
//! Not for: publishing or subscribing (the samples only prove that a connection is accepted), and
//! not an AWS SDK (no usage metrics are sent).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod args;
mod connect;
pub mod custom_auth;
mod encoding;
mod endpoint;
mod error;
mod mode;
mod proxy;
mod secrets;
pub mod spec;
mod tls;
#[cfg(feature = "sigv4")]
pub mod websocket;

use std::future::Future;
use std::process::ExitCode;

pub use connect::ConnectionSpec;
pub use error::{
    CredentialsProblem, Error, FileProblem, PemFile, ProfileFileKind, SignatureProblem, Stage,
    TlsFailure,
};
pub use mode::AuthMode;
pub use proxy::{ProxyName, ProxySource};

/// Run a sample: print the banner, build the spec, connect, report, disconnect.
///
/// Prints `<banner>`, a blank line, `Attempting to connect!` and `Connection attempt successful!`
/// on success (exit 0). On failure prints `Connection attempt failed: <cause>` (or
/// `error: <cause>` for a usage error) and a `hint:` line to standard error, and exits 1 (2 for
/// usage errors). `mode` words the hints of failures met before the spec exists.
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
        Err(e) => return fail(&Error::Runtime(e), mode),
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
    if e.is_usage() {
        eprintln!("error: {}", e.cause());
    } else {
        eprintln!("Connection attempt failed: {}", e.cause());
    }
    eprintln!("hint: {}", secrets::redact(&e.hint(mode)));
    ExitCode::from(e.exit_code())
}
