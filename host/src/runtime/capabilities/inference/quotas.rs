//! The `inference` capability's quotas.

crate::runtime::quota::quotas! {
    /// How much model work one call may ask of the host.
    pub struct InferenceQuotas {
        /// Bytes of tensors (inputs and outputs) one call may exchange with the host's
        /// models: the host holds them while the model runs.
        "inference_bytes_per_call" => bytes_per_call: u64 = 64 << 20,
        /// Model runs one call may make: each costs host CPU outside the call's fuel.
        "inference_runs_per_call" => runs_per_call: u32 = 16,
    }
}
