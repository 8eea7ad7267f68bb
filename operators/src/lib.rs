//! The standard operator library. Every op registers through the same public
//! [`Registry::register`] door a third-party crate uses.

pub mod log_mel;
pub mod npu;
pub mod ops;
pub mod patterns;
pub mod quantize;

use amanuensis_runtime::{Registry, RuntimeError};

/// Registers every standard operator, the fused ops and the fusion patterns producing them.
pub fn register_standard(reg: &mut Registry) -> Result<(), RuntimeError> {
    use ops::*;
    reg.register(features::LogMelDef)?;
    reg.register(conv::Conv1dDef)?;
    reg.register(nn::LinearDef)?;
    reg.register(nn::LayerNormDef)?;
    reg.register(nn::GeluDef)?;
    reg.register(nn::AddDef)?;
    reg.register(attention::AttentionDef)?;
    reg.register(attention::KvCacheAttentionDef)?;
    reg.register(tensor_ops::TransposeDef)?;
    reg.register(tensor_ops::SplitHeadsDef)?;
    reg.register(tensor_ops::EmbeddingDef)?;
    reg.register(tensor_ops::PositionEmbeddingDef)?;
    reg.register(tensor_ops::TakeDef)?;
    reg.register(tensor_ops::SqueezeDef)?;
    reg.register(tensor_ops::UnsqueezeDef)?;
    reg.register(tensor_ops::SliceDef)?;
    reg.register(tensor_ops::PadReflectDef)?;
    reg.register(features::MagnitudeDef)?;
    reg.register(nn::ReluDef)?;
    reg.register(nn::SigmoidDef)?;
    reg.register(recurrent::LstmDef)?;
    reg.register(fused::LinearGeluDef)?;
    reg.register(fused::LinearResidualDef)?;
    reg.register(fused::Conv1dGeluDef)?;
    reg.register(fused::LinearGroupDef)?;
    reg.register_pattern(npu::patterns::LinearGeluPattern)?;
    reg.register_pattern(npu::patterns::LinearResidualPattern)?;
    reg.register_pattern(npu::patterns::Conv1dGeluPattern)?;
    reg.register_pattern(patterns::LinearSiblingsPattern)?;
    for p in patterns::NormIntoLinearPattern::ALL {
        reg.register_pattern(p)?;
    }
    Ok(())
}

/// A registry holding the standard operators.
pub fn standard_registry() -> Registry {
    let mut reg = Registry::new();
    register_standard(&mut reg).expect("standard operator names are unique");
    reg
}
