//! The kernels' PTX, generated from `ptx/src` by `bash ptx/generate.sh` and
//! embedded here; [`crate::Gpu`] loads each module once.

/// A PTX module and the compute capability it needs.
pub(crate) struct PtxModule {
    pub name: &'static str,
    pub text: &'static str,
    /// Lowest compute capability major version that loads it (8: compute_80
    /// PTX; 9: compute_90 PTX with thread-block clusters).
    pub min_major: u32,
}

const fn module(name: &'static str, text: &'static str, min_major: u32) -> PtxModule {
    PtxModule {
        name,
        text,
        min_major,
    }
}

/// Every module (ptx/build.py compiles `*cluster*` modules for compute_90).
pub(crate) const MODULES: [PtxModule; 11] = [
    module("recurrent", include_str!("../../ptx/recurrent.ptx"), 8),
    module(
        "recurrent_mma",
        include_str!("../../ptx/recurrent_mma.ptx"),
        8,
    ),
    module("dense", include_str!("../../ptx/dense.ptx"), 8),
    module("generate", include_str!("../../ptx/generate.ptx"), 8),
    module("train", include_str!("../../ptx/train.ptx"), 8),
    module("train_mma", include_str!("../../ptx/train_mma.ptx"), 8),
    module(
        "recurrent_cluster",
        include_str!("../../ptx/recurrent_cluster.ptx"),
        9,
    ),
    module(
        "recurrent_cluster_regs",
        include_str!("../../ptx/recurrent_cluster_regs.ptx"),
        9,
    ),
    module(
        "generate_cluster",
        include_str!("../../ptx/generate_cluster.ptx"),
        9,
    ),
    module(
        "generate_cluster_regs",
        include_str!("../../ptx/generate_cluster_regs.ptx"),
        9,
    ),
    module(
        "train_cluster",
        include_str!("../../ptx/train_cluster.ptx"),
        9,
    ),
];

/// The names of the kernels (`.entry` functions) a PTX module defines.
pub(crate) fn entry_names(ptx: &str) -> impl Iterator<Item = &str> {
    ptx.lines().filter_map(|line| {
        let rest = line.trim_start().strip_prefix(".visible .entry ")?;
        rest.split('(').next().map(str::trim)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_names_its_kernels() {
        let all: Vec<&str> = MODULES.iter().flat_map(|m| entry_names(m.text)).collect();
        for k in [
            "rec_persist_f32_gru_after",
            "rec_step_f16_lstm",
            "rec_mma_f16_lstm",
            "gemm_nt_f16",
            "xent_rows",
            "gen_persist_f32_gru_before",
            "gen_sample",
            "rec_cluster16_f32_gru_after",
            "rec_cluster8_f16_lstm",
            "gen_cluster16_f16_gru_before",
            "gen_rcluster16_f32_gru_after",
            "gen_rcluster16_f16_lstm",
            "gen_rcluster16b1_f32_gru_after",
            "gen_rcluster16b1_f16_rnn_relu",
            "tr_cluster16_fwd_f32_gru_before",
            "tr_cluster8_bwd_f16_lstm",
        ] {
            assert!(all.contains(&k), "{k} missing from the embedded PTX");
        }
        // Cluster kernels only in the compute_90 modules.
        for m in &MODULES {
            let clusters = entry_names(m.text).any(|k| k.contains("cluster"));
            assert_eq!(clusters, m.min_major >= 9, "{}", m.name);
            assert_eq!(
                m.text.contains(".target sm_90"),
                m.min_major >= 9,
                "{}",
                m.name
            );
        }
    }

    /// `Gpu` finds a kernel's module by the kernel's name (and loads it on
    /// first use), so no name may be defined by two modules.
    #[test]
    fn every_kernel_name_is_in_one_module() {
        let mut seen = std::collections::HashMap::new();
        for m in &MODULES {
            for k in entry_names(m.text) {
                if let Some(other) = seen.insert(k, m.name) {
                    panic!("{k} is defined in both {other} and {}", m.name);
                }
            }
        }
        for m in &MODULES {
            assert!(
                seen.values().any(|&n| n == m.name),
                "{} has no kernel",
                m.name
            );
        }
    }
}
