"""The Beam job's stages, one module each: read -> tokenize -> pair -> mask -> write.

Each module holds a stage's ``PTransform`` (the Beam wiring) and the plain functions it
applies, which tests call without Beam. :mod:`preprocess.pipeline` connects them.
"""
