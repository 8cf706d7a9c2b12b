//! The `state` capability's quotas.

crate::runtime::quota::quotas! {
    /// What a stage's plugin may make the host store for it.
    pub struct StateQuotas {
        /// Longest state key, in bytes.
        "state_key_bytes" => key_bytes: u32 = 1 << 10,
        /// Largest state value, in bytes.
        "state_value_bytes" => value_bytes: u32 = 1 << 20,
        /// Keys and values one call may have pending before its commit: the host holds
        /// them in memory until the call ends.
        "state_write_bytes_per_call" => write_bytes_per_call: u64 = 16 << 20,
        /// Keys and values the stage may keep in the state store, so that a plugin fills
        /// its quota, never the disk.
        "state_total_bytes" => total_bytes: u64 = 256 << 20,
    }
}
