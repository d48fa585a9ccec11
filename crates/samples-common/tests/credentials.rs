//! The whole SigV4 credential path, `spec::sigv4_websocket`, against the real AWS default chain:
//! a mistyped `AWS_PROFILE` and a wrong `AWS_SHARED_CREDENTIALS_FILE` are reported as such, and
//! a right profile still resolves.
//!
//! This file is its own test process with one test, because it sets the process environment
//! the chain reads. Nothing touches the network: IMDS is disabled, no container or web-identity
//! variable is set, and the profile files live in a scratch HOME.
#![cfg(feature = "sigv4")]

use clap::Parser;
use samples_common::args::ConnectionArgs;
use samples_common::{spec, AuthMode};

#[derive(Parser)]
struct TestArgs {
    #[command(flatten)]
    conn: ConnectionArgs,
}

/// Run the SigV4 spec builder with exactly these AWS variables; `Err` gives (cause, hint).
async fn sigv4_with(home: &std::path::Path, vars: &[(&str, &str)]) -> Result<(), (String, String)> {
    for (key, _) in std::env::vars() {
        if key.starts_with("AWS_") {
            std::env::remove_var(key);
        }
    }
    std::env::set_var("HOME", home);
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    for (key, value) in vars {
        std::env::set_var(key, value);
    }
    let args = TestArgs::try_parse_from(["test", "--port", "1", "localhost"]).unwrap();
    match spec::sigv4_websocket(&args.conn, Some("us-east-1")).await {
        Ok(_) => Ok(()),
        Err(e) => Err((e.cause(), e.hint(AuthMode::SigV4WebSocket))),
    }
}

#[tokio::test]
async fn profile_mistakes_are_named_and_a_right_profile_resolves() {
    let home = std::env::temp_dir().join(format!("samples-common-chain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    let credentials = home.join(".aws/credentials");
    std::fs::write(
        &credentials,
        "[dev]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = not-a-real-secret\n",
    )
    .unwrap();
    let h = home.display();

    assert_eq!(
        sigv4_with(&home, &[("AWS_PROFILE", "deev")]).await,
        Err((
            format!(
                "no AWS credentials found: profile 'deev' (AWS_PROFILE) not found in \
                 {h}/.aws/credentials"
            ),
            "check the spelling of AWS_PROFILE; the profiles defined are 'dev' \
             (`aws configure list-profiles`)"
                .to_string()
        ))
    );

    let wrong = home.join("credentials-typo");
    assert_eq!(
        sigv4_with(
            &home,
            &[
                ("AWS_PROFILE", "dev"),
                ("AWS_SHARED_CREDENTIALS_FILE", wrong.to_str().unwrap())
            ]
        )
        .await,
        Err((
            format!(
                "no AWS credentials found: the credentials file {} \
                 (AWS_SHARED_CREDENTIALS_FILE) does not exist",
                wrong.display()
            ),
            "point AWS_SHARED_CREDENTIALS_FILE at an existing file or unset it, \
             or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                .to_string()
        ))
    );

    // Nothing configured at all: the chain's own summary of what it tried.
    let (cause, hint) = sigv4_with(&home.join("no-such-home"), &[])
        .await
        .unwrap_err();
    assert!(
        cause.starts_with("no AWS credentials found: none of the providers had any (tried "),
        "{cause}"
    );
    assert_eq!(
        hint,
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary \
         keys), or AWS_PROFILE, or run `aws configure`"
    );

    // The profile spelt right, and the same file named explicitly, resolve.
    assert_eq!(sigv4_with(&home, &[("AWS_PROFILE", "dev")]).await, Ok(()));
    assert_eq!(
        sigv4_with(
            &home,
            &[
                ("AWS_PROFILE", "dev"),
                ("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap())
            ]
        )
        .await,
        Ok(())
    );
}
