"""Settings of the performance appendix at each scale."""

from __future__ import annotations

from sgdbook.book.scales import ScaleTable

SETTINGS = ScaleTable(
    settings={
        "smoke": dict(
            pe_models=[[784, 100, 10]], pe_batches=[32], reps=2,
            lanczos_small=[20, 8, 10, 10], lanczos_large=[784, 16, 10], points=128,
            trace_probes=20, moments_width=[784, 100, 10], moments_ns=100, moments_m=16, moments_n=2000,
            ens_runs=20, ens_steps=20, ens_loop_runs=2, vmf_dims=[100], vmf_n=200, walk_window=[3, 5], walk_steps=5,
            cnn_pe_batch=32, cnn_points=100, cnn_topk=3, cnn_tol=1e-3, cnn_ens_runs=3, cnn_ens_steps=3, pool_jobs=2,
        ),
        "book": dict(
            pe_models=[[784, 100, 10], [784, 1024, 512, 10]], pe_batches=[256, 128], reps=5,
            lanczos_small=[50, 16, 10, 10], lanczos_large=[784, 128, 10], points=512,
            trace_probes=100, moments_width=[784, 800, 800, 800, 10], moments_ns=300, moments_m=64, moments_n=10000,
            ens_runs=1000, ens_steps=400, ens_loop_runs=10, vmf_dims=[100, 1000, 4000], vmf_n=1000, walk_window=[10, 11], walk_steps=200,
            cnn_pe_batch=256, cnn_points=500, cnn_topk=10, cnn_tol=1e-3, cnn_ens_runs=12, cnn_ens_steps=20, pool_jobs=8,
        ),
        "paper": dict(
            pe_models=[[784, 100, 10], [784, 1024, 512, 10]], pe_batches=[256, 128], reps=7,
            lanczos_small=[50, 16, 10, 10], lanczos_large=[784, 128, 10], points=512,
            trace_probes=100, moments_width=[784, 800, 800, 800, 10], moments_ns=3000, moments_m=64, moments_n=60000,
            ens_runs=10000, ens_steps=400, ens_loop_runs=20, vmf_dims=[100, 1000, 4000], vmf_n=1000, walk_window=[10, 11], walk_steps=200,
            cnn_pe_batch=256, cnn_points=1000, cnn_topk=10, cnn_tol=1e-3, cnn_ens_runs=12, cnn_ens_steps=20, pool_jobs=8,
        ),
    },
    descriptions={
        "pe_models": "MLPs (layer widths) for per-example gradients",
        "pe_batches": "batch size for each of those MLPs",
        "reps": "timed repetitions per contender (median reported)",
        "lanczos_small": "ReLU MLP with p ≈ 1,000 for the top-10 eigenvalues (dense truth)",
        "lanczos_large": "ReLU MLP with p ≈ 100,000 for the top-10 eigenvalues and the trace",
        "points": "random data points of the curvature problems",
        "trace_probes": "Hutchinson probes",
        "moments_width": "MLP whose minibatch-gradient moments are estimated (the DFNN: d ≈ 1.9 M)",
        "moments_ns": "minibatch gradients n_s behind κ̂, SNR and norm stochasticity",
        "moments_m": "minibatch size",
        "moments_n": "examples in the data set",
        "ens_runs": "independent Gauss-10 runs in the ensemble",
        "ens_steps": "SGD steps per run",
        "ens_loop_runs": "runs timed in the sequential loop (time extrapolated to all runs)",
        "vmf_dims": "dimensions of the vMF sampling comparison",
        "vmf_n": "vMF samples per comparison",
        "walk_window": "segments × grid points of the loss-along-a-step benchmark (walk-with-sgd stand-ins)",
        "walk_steps": "SGD steps (batch 100) of the trajectory-recorder benchmark (walk-with-sgd stand-ins)",
        "cnn_pe_batch": "batch of the per-example gradients of the walk-with-sgd CNNs (8×8 inputs)",
        "cnn_points": "images of the CNN's curvature problems (Lanczos, Hutchinson)",
        "cnn_topk": "top eigenvalues of the CNN's Hessian (chapter 04's noise share uses 10)",
        "cnn_tol": "relative residual tolerance of the CNN eigenvalues (chapter 04's)",
        "cnn_ens_runs": "CNN runs trained at once (stacked) or in a loop",
        "cnn_ens_steps": "SGD steps of each of those runs",
        "pool_jobs": "independent stand-in runs (CNN and residual net at batch 25 and 100, walk_steps steps each) timed in "
                     "the worker pool and in this process",
    },
    paper_value={
        "pe_models": "targets of the library issue",
        "moments_ns": "3,000 (the vmf paper)",
        "ens_runs": "10,000 (the Hessian paper)",
        "ens_steps": "400 (Gauss-10)",
    },
)
