"""The domain core: bar validation, features (the one source), fusion, Kelly, the calibrator,
scoring and the hit rule, calibration metrics, manifests, job rules, config and errors.
Imports numpy and the standard library only; every other room may import it."""
