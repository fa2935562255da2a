from omicsgen.sweep import expand_models


def test_lists_expand_into_one_model_per_combination():
    models = expand_models({
        "vae": {"family": "vae", "beta": [0.5, 4], "latent_dim": [5, 10], "hidden_dim": 64},
        "lstm": {"family": "lstm", "trainer": {"max_epochs": 3}, "datasets": ["a", "b"]},
    })
    assert set(models) == {"vae_beta-0.5_latent_dim-5", "vae_beta-0.5_latent_dim-10",
                           "vae_beta-4_latent_dim-5", "vae_beta-4_latent_dim-10", "lstm"}
    assert models["vae_beta-4_latent_dim-5"] == {"family": "vae", "beta": 4, "latent_dim": 5, "hidden_dim": 64}
    assert models["lstm"] == {"family": "lstm", "trainer": {"max_epochs": 3}, "datasets": ["a", "b"]}
