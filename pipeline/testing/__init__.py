"""Fixtures the tests and the benches share, installed with the package so that both import them
without path hacks; the product itself never imports them.

- `site`: the loopback test site (every extraction case, redirects, robots, slow and huge pages);
- `toydata`: coloured-shape drawings and a writer of tiny datasets in the pipeline's layout;
- `shapesite`: a clip-nano trained on those shapes, and a loopback site of fresh shape images.
"""
