//! The process's TLS crypto provider. rustls picks one by itself only when exactly one
//! is compiled in; a build with the cloud object stores has aws-lc-rs beside ring, so
//! the MQTT client and the agent ask for ring explicitly before their first handshake.
//! The host's listeners name ring in their own server configs.

/// Make ring the process's provider, unless one is set already.
pub fn use_ring() {
    // An error means a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
