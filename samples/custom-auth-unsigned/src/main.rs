//! custom-auth-unsigned: connect through a custom authorizer with token signing disabled.
//!
//! The authorizer name, username and password travel in the MQTT CONNECT packet, on port 443
//! with ALPN `mqtt` (or over a WebSocket with `--websockets`). AWS IoT Core hands them to the
//! authorizer's Lambda, whose policy decides.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use samples_common::args::{self, ConnectionArgs, CustomAuthArgs};
use samples_common::{spec, AuthMode};

const BANNER: &str = "custom-auth-unsigned - Custom authorizer without token signing";

#[derive(Parser, Debug)]
#[command(
    name = "custom-auth-unsigned",
    version,
    about = "Connect to AWS IoT Core through a custom authorizer with signing disabled, then disconnect.",
    after_help = "Example:\n  \
        cargo run -p custom-auth-unsigned -- --authorizer my-authorizer \\\n      \
        --username alice --password 'secret' \\\n      \
        abc123-ats.iot.eu-west-1.amazonaws.com"
)]
struct Args {
    #[command(flatten)]
    auth: CustomAuthArgs,

    /// Use MQTT over WebSocket (wss://<endpoint>/mqtt) instead of MQTT over TLS with ALPN mqtt.
    #[arg(long, visible_alias = "use_websockets")]
    websockets: bool,

    #[command(flatten, next_help_heading = "Connection")]
    connection: ConnectionArgs,
}

fn main() -> ExitCode {
    let args: Args = args::parse(AuthMode::CustomAuthUnsigned);
    samples_common::run(BANNER, AuthMode::CustomAuthUnsigned, async {
        spec::custom_auth(&args.connection, &args.auth, None, args.websockets)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_names_port_443_and_its_example_pastes() {
        let help = args::command::<Args>(AuthMode::CustomAuthUnsigned)
            .term_width(80)
            .render_help()
            .to_string();
        assert!(help.contains("TCP port [default: 443]"), "{help}");
        let example: Vec<&str> = help.lines().skip_while(|l| *l != "Example:").collect();
        assert_eq!(
            example,
            [
                "Example:",
                "  cargo run -p custom-auth-unsigned -- --authorizer my-authorizer \\",
                "      --username alice --password 'secret' \\",
                "      abc123-ats.iot.eu-west-1.amazonaws.com",
            ]
        );
    }
}
