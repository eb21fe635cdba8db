"""The notebooks' studies as tested functions: each notebook step is one call into these.

``toy_uniformity`` (01: spline facts and uniformity on toy manifolds), ``records`` (what a
results file says about the generator and its bank), ``volume_shift`` (02: where samplers'
draws sit in volume), ``real_reference`` (the real images a study scores against),
``sweep_reference`` (03: that reference by generator, Fashion-MNIST's pair or the user's real
images), ``sweep_evaluation`` (03: ρ and ψ samplers scored with CIs), ``estimator_agreement`` (03:
projected and top-k against exact volumes), ``attribute_shift`` (02, 04: attribute
distributions per sampler, per-class MaGNET/plain ratios and their volumes),
``per_class_polarity`` (05: one bank per class of a conditional generator, the ρ sweep within
classes against truncation, per-class quality) and ``verdicts`` (headlines from bootstrap
intervals). Studies sit on top of ``experiment``; nothing in the
package imports them.
"""
