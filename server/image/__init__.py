"""Image generators and their judge: the Fashion-MNIST evaluator CNN, a class-conditional DCGAN, a convolutional
VAE, a VAE-GAN, a Bernoulli RBM and Deep Dream; their data, trainers, likelihoods, quality metrics and the
frame-by-frame sampling API (``sampling.py``) the server streams from. See docs/image-models.md."""
