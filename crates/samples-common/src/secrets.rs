//! Keeping secrets out of every output.
//!
//! The samples hold passwords, secret keys, session tokens and signatures. They never print them
//! on purpose, but dependencies log requests (tungstenite logs the whole upgrade request, query
//! string included, at trace level). So every secret is registered here as soon as it is known,
//! and the logger installed by [`init_logging`] masks registered values in every record, whatever
//! crate emitted it. The same mask is applied to the user-facing error line.

use std::sync::RwLock;

use log::{LevelFilter, Log, Metadata, Record};

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// What a masked secret looks like in output.
pub(crate) const MASK: &str = "****";

/// Remember `value` as secret: from now on it is masked in logs and error messages, in its raw
/// form and in its URL-encoded form. Values shorter than 4 characters are not registered, since
/// masking them would garble ordinary text.
pub(crate) fn register(value: &str) {
    if value.len() < 4 {
        return;
    }
    let encoded = crate::encoding::url_encode(value);
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for v in [value.to_string(), encoded] {
        if !secrets.contains(&v) {
            secrets.push(v);
        }
    }
    // Longest first, so that a secret containing another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `text` with every registered secret replaced by [`MASK`].
pub(crate) fn redact(text: &str) -> String {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    out
}

/// Crates that log wire data at a level where secrets would appear; they are capped at `debug`
/// whatever `RUST_LOG` asks (the mask would catch them too; this keeps the noise down as well).
const CAPPED: &[&str] = &[
    "tungstenite",
    "async_tungstenite",
    "aws_smithy_runtime",
    "hyper",
];

/// Install the logger: `RUST_LOG` as usual (default `warn`), to standard error, with every
/// registered secret masked. Calling it twice is harmless.
pub(crate) fn init_logging() {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(LevelFilter::Warn);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    let inner = builder.build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(RedactingLogger { inner })).is_ok() {
        log::set_max_level(max);
    }
}

struct RedactingLogger {
    inner: env_logger::Logger,
}

impl Log for RedactingLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        let capped = CAPPED
            .iter()
            .any(|c| metadata.target().starts_with(c) && metadata.level() > log::Level::Debug);
        !capped && self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let text = redact(&record.args().to_string());
        self.inner.log(
            &Record::builder()
                .args(format_args!("{text}"))
                .metadata(record.metadata().clone())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secret_is_masked_raw_and_url_encoded() {
        register("s3cr3t/with+specials=");
        let text = "a=s3cr3t/with+specials= b=s3cr3t%2Fwith%2Bspecials%3D c=public";
        assert_eq!(redact(text), "a=**** b=**** c=public");
    }

    #[test]
    fn short_values_are_not_registered() {
        register("ab");
        assert_eq!(redact("abc ab"), "abc ab");
    }
}
