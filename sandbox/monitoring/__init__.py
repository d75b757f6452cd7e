"""Model monitoring: drift between training reference data and live inference features."""
