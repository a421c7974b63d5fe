//! The kernels' PTX, generated from `ptx/src` by `bash ptx/generate.sh` and
//! embedded here; [`crate::Gpu`] loads each module once.

/// `(module name, PTX text)` for every module.
pub(crate) const MODULES: [(&str, &str); 5] = [
    ("recurrent", include_str!("../../ptx/recurrent.ptx")),
    ("recurrent_mma", include_str!("../../ptx/recurrent_mma.ptx")),
    ("dense", include_str!("../../ptx/dense.ptx")),
    ("generate", include_str!("../../ptx/generate.ptx")),
    ("train", include_str!("../../ptx/train.ptx")),
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
        let all: Vec<&str> = MODULES.iter().flat_map(|(_, p)| entry_names(p)).collect();
        for k in [
            "rec_persist_f32_gru_after",
            "rec_step_f16_lstm",
            "rec_mma_f16_lstm",
            "gemm_nt_f16",
            "xent_rows",
            "gen_persist_f32_gru_before",
            "gen_sample",
        ] {
            assert!(all.contains(&k), "{k} missing from the embedded PTX");
        }
    }
}
