"""Seeded synthetic breast-ultrasound cohort with known truth."""
