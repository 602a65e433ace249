"""Model monitoring: training profiles, drift and quality metrics computed by the engine, prediction logs.

Sits below the engines and serving (they call it) and above the optimizer, compiler and registry
(DESIGN section 12). It builds SQL as sqlglot ASTs and touches only aggregated results; never torch.
"""
