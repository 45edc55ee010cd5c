"""Classification metrics: they live in ``appliance/metrics.py`` (numpy only) so that batch
classification on the device uses the same code as training-time evaluation; re-exported
here for the training code."""
from oncolens.appliance.metrics import (binary_auc, bootstrap_ci, calibration,  # noqa: F401
                                        confusion_matrix, full_report, per_class, roc_auc_ovr,
                                        roc_curve, summary)
