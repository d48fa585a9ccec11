//! websocket-connect: MQTT over WebSocket on port 443, authenticated with SigV4 or a custom
//! authorizer.
//!
//! By default the WebSocket upgrade (`GET /mqtt`) is presigned with SigV4 for service
//! `iotdevicegateway`, using AWS credentials from the standard chain, and signed again on every
//! attempt. Given custom-auth flags instead, it is the seed's "Websocket Connect with Custom
//! Authentication": the authorizer parameters travel in the MQTT username, as the official SDKs do.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use samples_common::args::{self, ConnectionArgs, CustomAuthArgs, TokenArgs};
use samples_common::{spec, AuthMode};

const BANNER: &str = "websocket-connect - MQTT over WebSocket with SigV4 or a custom authorizer";

#[derive(Parser, Debug)]
#[command(
    name = "websocket-connect",
    version,
    about = "Connect to AWS IoT Core over a WebSocket signed with SigV4 (or through a custom authorizer), then disconnect.",
    after_help = "Credentials come from the standard AWS chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY \
        / AWS_SESSION_TOKEN, AWS_PROFILE and ~/.aws, SSO, web identity, ECS and EC2 roles.\n\n\
        Examples:\n  \
        cargo run -p websocket-connect -- \\\n      \
        --endpoint abc123-ats.iot.eu-west-1.amazonaws.com\n  \
        cargo run -p websocket-connect -- --authorizer my-authorizer \\\n      \
        --username alice --password 'secret' \\\n      \
        abc123-ats.iot.eu-west-1.amazonaws.com"
)]
struct Args {
    /// Region to sign for [default: read from the endpoint name, e.g. eu-west-1].
    #[arg(long, visible_aliases = ["region", "signing_region"], value_name = "REGION")]
    signing_region: Option<String>,

    #[command(
        flatten,
        next_help_heading = "Custom authentication (instead of SigV4)"
    )]
    auth: CustomAuthArgs,

    #[command(
        flatten,
        next_help_heading = "Custom authentication (instead of SigV4)"
    )]
    token: TokenArgs,

    #[command(flatten, next_help_heading = "Connection")]
    connection: ConnectionArgs,
}

fn main() -> ExitCode {
    // Every mode of this sample defaults to port 443, so the SigV4 mode words the help.
    let args: Args = args::parse(AuthMode::SigV4WebSocket);
    let mode = spec::websocket_mode(&args.auth, &args.token);
    samples_common::run(
        BANNER,
        mode,
        spec::websocket(
            &args.connection,
            &args.auth,
            &args.token,
            args.signing_region.as_deref(),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_names_port_443_and_its_examples_paste() {
        let help = args::command::<Args>(AuthMode::SigV4WebSocket)
            .term_width(80)
            .render_help()
            .to_string();
        assert!(help.contains("TCP port [default: 443]"), "{help}");
        let examples: Vec<&str> = help.lines().skip_while(|l| *l != "Examples:").collect();
        assert_eq!(
            examples,
            [
                "Examples:",
                "  cargo run -p websocket-connect -- \\",
                "      --endpoint abc123-ats.iot.eu-west-1.amazonaws.com",
                "  cargo run -p websocket-connect -- --authorizer my-authorizer \\",
                "      --username alice --password 'secret' \\",
                "      abc123-ats.iot.eu-west-1.amazonaws.com",
            ]
        );
    }
}
