//! The hypervisor conformance suite on KVM, in both interrupt controller placements.
#![cfg(target_os = "linux")]

use backend_kvm::KvmHypervisor;
use hv::{IrqChipMode, Partition, PartitionConfig};
use std::sync::Arc;

fn kvm(mode: IrqChipMode) -> impl Fn(u32) -> hv::Result<Arc<dyn Partition>> {
    move |vcpus| {
        let kvm = KvmHypervisor::open()?;
        let p = kvm.create_partition(&PartitionConfig {
            vcpu_count: vcpus,
            irqchip: mode,
        })?;
        Ok(Arc::new(p) as Arc<dyn Partition>)
    }
}

mod split {
    use super::*;
    conformance::backend_tests!(kvm(IrqChipMode::Split));
}

mod in_kernel {
    use super::*;
    conformance::backend_tests!(kvm(IrqChipMode::InKernel));
}
