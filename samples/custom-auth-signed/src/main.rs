//! custom-auth-signed: connect through a custom authorizer with token signing enabled.
//!
//! Besides the authorizer name, username and password, the MQTT username carries a token and
//! its RSA signature. AWS IoT Core verifies the signature against the authorizer's public key
//! before it calls the Lambda. `--authorizer-private-key` makes the signature here.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use samples_common::args::{self, ConnectionArgs, CustomAuthArgs, TokenArgs};
use samples_common::{spec, AuthMode};

const BANNER: &str = "custom-auth-signed - Custom authorizer with a signed token";

#[derive(Parser, Debug)]
#[command(
    name = "custom-auth-signed",
    version,
    about = "Connect to AWS IoT Core through a custom authorizer with token signing, then disconnect.",
    after_help = "Examples:\n  \
        cargo run -p custom-auth-signed -- --authorizer my-authorizer \\\n      \
        --username alice --password 'secret' \\\n      \
        --authorizer-token-key-name token --authorizer-token-key-value allow \\\n      \
        --authorizer-signature \"$SIGNATURE\" \\\n      \
        abc123-ats.iot.eu-west-1.amazonaws.com\n  \
        cargo run -p custom-auth-signed -- --authorizer my-authorizer \\\n      \
        --authorizer-token-key-name token --authorizer-token-key-value allow \\\n      \
        --authorizer-private-key signing-key.pem \\\n      \
        abc123-ats.iot.eu-west-1.amazonaws.com"
)]
struct Args {
    #[command(flatten)]
    auth: CustomAuthArgs,

    #[command(flatten)]
    token: TokenArgs,

    /// Use MQTT over WebSocket (wss://<endpoint>/mqtt) instead of MQTT over TLS with ALPN mqtt.
    #[arg(long, visible_alias = "use_websockets")]
    websockets: bool,

    #[command(flatten, next_help_heading = "Connection")]
    connection: ConnectionArgs,
}

fn main() -> ExitCode {
    let args: Args = args::parse(AuthMode::CustomAuthSigned);
    samples_common::run(BANNER, AuthMode::CustomAuthSigned, async {
        spec::custom_auth(
            &args.connection,
            &args.auth,
            Some(&args.token),
            args.websockets,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_names_port_443_and_its_examples_paste() {
        let help = args::command::<Args>(AuthMode::CustomAuthSigned)
            .term_width(80)
            .render_help()
            .to_string();
        assert!(help.contains("TCP port [default: 443]"), "{help}");
        let examples: Vec<&str> = help.lines().skip_while(|l| *l != "Examples:").collect();
        assert_eq!(
            examples,
            [
                "Examples:",
                "  cargo run -p custom-auth-signed -- --authorizer my-authorizer \\",
                "      --username alice --password 'secret' \\",
                "      --authorizer-token-key-name token --authorizer-token-key-value allow \\",
                "      --authorizer-signature \"$SIGNATURE\" \\",
                "      abc123-ats.iot.eu-west-1.amazonaws.com",
                "  cargo run -p custom-auth-signed -- --authorizer my-authorizer \\",
                "      --authorizer-token-key-name token --authorizer-token-key-value allow \\",
                "      --authorizer-private-key signing-key.pem \\",
                "      abc123-ats.iot.eu-west-1.amazonaws.com",
            ]
        );
    }
}
