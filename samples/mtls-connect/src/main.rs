//! mtls-connect: connect to AWS IoT Core with an X.509 client certificate, then disconnect.
//!
//! Port 8883 is plain MQTT over TLS; on port 443 the sample offers ALPN `x-amzn-mqtt-ca`,
//! which is how AWS IoT Core tells an mTLS client from a WebSocket one on that port.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use samples_common::args::{self, ConnectionArgs};
use samples_common::{spec, AuthMode};

const BANNER: &str = "mtls-connect - MQTT over TLS with an X.509 client certificate";

#[derive(Parser, Debug)]
#[command(
    name = "mtls-connect",
    version,
    about = "Connect to AWS IoT Core with an X.509 client certificate (mutual TLS), then disconnect.",
    after_help = "Examples:\n  \
        cargo run -p mtls-connect -- --cert device.pem.crt --key private.pem.key \\\n      \
        --endpoint abc123-ats.iot.eu-west-1.amazonaws.com\n  \
        cargo run -p mtls-connect -- --cert device.pem.crt --key private.pem.key \\\n      \
        --port 443 abc123-ats.iot.eu-west-1.amazonaws.com"
)]
struct Args {
    /// Device certificate, PEM (as written by `aws iot create-keys-and-certificate`).
    #[arg(long, value_name = "PEM")]
    cert: PathBuf,

    /// The certificate's private key, PEM (PKCS#1, PKCS#8 or SEC1).
    #[arg(long, value_name = "PEM")]
    key: PathBuf,

    #[command(flatten, next_help_heading = "Connection")]
    connection: ConnectionArgs,
}

fn main() -> ExitCode {
    let args: Args = args::parse(AuthMode::Mtls);
    samples_common::run(BANNER, AuthMode::Mtls, async {
        spec::mtls(&args.connection, &args.cert, &args.key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_names_port_8883_and_its_examples_paste() {
        let help = args::command::<Args>(AuthMode::Mtls)
            .term_width(80)
            .render_help()
            .to_string();
        assert!(help.contains("[default: 8883]"), "{help}");
        let examples: Vec<&str> = help.lines().skip_while(|l| *l != "Examples:").collect();
        assert_eq!(
            examples,
            [
                "Examples:",
                "  cargo run -p mtls-connect -- --cert device.pem.crt --key private.pem.key \\",
                "      --endpoint abc123-ats.iot.eu-west-1.amazonaws.com",
                "  cargo run -p mtls-connect -- --cert device.pem.crt --key private.pem.key \\",
                "      --port 443 abc123-ats.iot.eu-west-1.amazonaws.com",
            ]
        );
    }
}
