//! iot-core-local: a local stand-in for an AWS IoT Core data endpoint.
pub mod config;
