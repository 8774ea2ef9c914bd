//! The observer classifier: the legacy `torch.save` reader, synsets, preprocessing, the
//! EfficientNet-Lite0 network against the Python reference, top-k.
//!
//! Reference constants come from `scripts/observer_reference.py` (see its header):
//! `fixture` wrote `tests/fixtures/legacy_small.pt`, `logits` printed the values below.
//! Tests that need the converted weights (`scripts/setup-observer.sh`) or `../shared/data`
//! print why they skip when those are absent.
//!
//! `imagenet_dev_accuracy` (ignored; ~1 min) measures top-1 / top-5 on imagenet-dev:
//! `cargo test -p ocular-models --test observer -- --ignored --nocapture`.
//! `lite1_imagenet_dev_accuracy` (ignored) does the same for EfficientNet-Lite1 on the first
//! `OBSERVER_LIMIT` images (default 100) with the benchmark's protocol (224 crop, resized to 240).

use std::path::{Path, PathBuf};

use ocular_models::observer::torch_legacy::{read_state_dict, LegacyDtype, LegacyError};
use ocular_models::observer::{
    self, center_crop_resize, crop_window, default_weights_path, normalize, preprocess,
    resize_square, top_k, weights_path, Classifier, FeatureLayer, Observer, ObserverError, Synsets,
    TorchScriptObserver, Variant, NUM_STAGES,
};
use tch::{Device, Kind, Tensor};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/legacy_small.pt"
);
const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data");

fn fixture() -> Vec<u8> {
    std::fs::read(FIXTURE).expect("tests/fixtures/legacy_small.pt")
}

/// A file of `../shared/data`, which CI checks out beside the repository.
///
/// # Panics
/// If it is absent: the test cannot run, and a green run must mean that it ran.
fn shared(rel: &str) -> PathBuf {
    let p = Path::new(SHARED).join(rel);
    assert!(
        p.exists(),
        "{} not found: this test needs ../shared/data beside the repository",
        p.display()
    );
    p
}

/// The converted Lite0 weights, which `make setup` installs.
///
/// # Panics
/// If they are absent (run `make setup`).
fn classifier() -> Classifier {
    let path = default_weights_path();
    assert!(
        path.exists(),
        "observer weights {} not found: run `make setup` (scripts/setup-observer.sh)",
        path.display()
    );
    Classifier::load(&path).expect("the converted weights load")
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ocular-observer-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

/// `0.5 + 0.5 sin(0.05 (c + 1) x + 0.03 y + 0.7 n)`, as `synthetic` in observer_reference.py.
fn synthetic(n: i64, h: i64, w: i64) -> Tensor {
    let f = (Kind::Float, Device::Cpu);
    let b = Tensor::arange(n, f).view([n, 1, 1, 1]);
    let c = Tensor::arange(3, f).view([1, 3, 1, 1]);
    let y = Tensor::arange(h, f).view([1, 1, h, 1]);
    let x = Tensor::arange(w, f).view([1, 1, 1, w]);
    ((c + 1.0) * 0.05 * x + y * 0.03 + b * 0.7).sin() * 0.5 + 0.5
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

// ---------------------------------------------------------------- legacy reader

#[test]
fn legacy_reader_reads_the_fixture() {
    let tensors = read_state_dict(&fixture()).expect("fixture parses");
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "0.weight",
            "0.bias",
            "1.weight",
            "1.bias",
            "1.running_mean",
            "1.running_var",
            "1.num_batches_tracked",
            "permuted",
            "sliced",
            "base",
            "scalar",
            "double",
            "half",
            "ramp"
        ]
    );
    let get = |name: &str| &tensors.iter().find(|(n, _)| n == name).expect(name).1;

    let w = get("0.weight");
    assert_eq!(
        (w.dtype, w.shape.as_slice()),
        (LegacyDtype::F32, &[3, 2, 1, 1][..])
    );
    assert_eq!(w.to_f32().expect("f32"), [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]);
    assert_eq!(get("0.bias").to_f32().expect("f32"), [0.25, -0.5, 1.0]);
    assert_eq!(get("1.running_var").to_f32().expect("f32"), [1.0; 3]);

    let n = get("1.num_batches_tracked");
    assert_eq!(
        (n.dtype, n.shape.len(), n.to_f64()),
        (LegacyDtype::I64, 0, vec![0.0])
    );
    let s = get("scalar");
    assert_eq!(
        (s.dtype, s.shape.len(), s.to_f64()),
        (LegacyDtype::I64, 0, vec![7.0])
    );
    assert!(s.to_f32().is_none());

    // base = arange(24).reshape(2, 3, 4) / 8; permuted = base.permute(2, 0, 1) (strides
    // (1, 12, 4) in the file); sliced = base[1, :, 1::2] (offset 13, strides (4, 2)).
    let base = |j: usize, k: usize, i: usize| (j * 12 + k * 4 + i) as f32 / 8.0;
    let b = get("base");
    assert_eq!(b.shape, [2, 3, 4]);
    assert_eq!(
        b.to_f32().expect("f32"),
        (0..24).map(|v| v as f32 / 8.0).collect::<Vec<_>>()
    );
    let p = get("permuted");
    assert_eq!(p.shape, [4, 2, 3]);
    let mut expected = Vec::new();
    for i in 0..4 {
        for j in 0..2 {
            for k in 0..3 {
                expected.push(base(j, k, i));
            }
        }
    }
    assert_eq!(p.to_f32().expect("f32"), expected);
    let sl = get("sliced");
    assert_eq!(sl.shape, [3, 2]);
    let expected: Vec<f32> = (0..3)
        .flat_map(|k| (0..2).map(move |t| base(1, k, 1 + 2 * t)))
        .collect();
    assert_eq!(sl.to_f32().expect("f32"), expected);

    let d = get("double");
    assert_eq!((d.dtype, d.to_f64()), (LegacyDtype::F64, vec![1.5, -2.25]));
    let h = get("half");
    assert_eq!(
        (h.dtype, h.to_f64()),
        (LegacyDtype::F16, vec![0.5, -1.0, 65504.0])
    );
    let r = get("ramp");
    assert_eq!(r.shape, [300]);
    assert_eq!(
        r.to_f32().expect("f32"),
        (0..300).map(|i| i as f32 * 0.25 - 10.0).collect::<Vec<_>>()
    );
}

#[test]
fn legacy_reader_rejects_truncated_and_garbage_input() {
    let bytes = fixture();
    // Every strict prefix is an error (never a panic).
    for len in 0..bytes.len() {
        assert!(
            read_state_dict(&bytes[..len]).is_err(),
            "prefix of {len} bytes parsed"
        );
    }
    // Trailing bytes.
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        read_state_dict(&longer),
        Err(LegacyError::Format(_))
    ));
    // A zip-format torch file, and plain garbage.
    assert!(matches!(
        read_state_dict(b"PK\x03\x04rest"),
        Err(LegacyError::Pickle { .. })
    ));
    assert!(read_state_dict(&[0u8; 64]).is_err());
    assert!(read_state_dict(&[0xffu8; 64]).is_err());
    // Every single-byte corruption either errors or still yields a consistent result.
    let mut rng = 0x1234_5678u32;
    for at in 0..bytes.len() {
        rng = rng.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let mut corrupt = bytes.clone();
        corrupt[at] ^= (rng >> 24) as u8 | 1;
        if let Ok(tensors) = read_state_dict(&corrupt) {
            for (_, t) in tensors {
                assert_eq!(t.data.len(), t.numel() * t.dtype.size());
            }
        }
    }
}

#[test]
fn conversion_writes_equivalent_safetensors() {
    let dst = temp_path("legacy_small.safetensors");
    let summary = observer::convert_legacy_checkpoint(Path::new(FIXTURE), &dst).expect("convert");
    assert_eq!(summary.tensors, 14);
    let bytes = std::fs::read(&dst).expect("written");
    assert_eq!(bytes.len() as u64, summary.bytes);
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    for (name, t) in read_state_dict(&fixture()).expect("fixture") {
        let view = st.tensor(&name).expect("tensor present");
        assert_eq!(view.dtype(), t.dtype.safetensors_dtype(), "{name}");
        assert_eq!(view.shape(), t.shape.as_slice(), "{name}");
        assert_eq!(view.data(), t.data.as_slice(), "{name}");
    }
    // Not the classifier's weights: loading them says what is missing.
    match Classifier::load(&dst) {
        Err(ObserverError::Weights { message, .. }) => assert!(message.contains("missing")),
        other => panic!("expected a weights error, got {other:?}"),
    }
    let garbage = temp_path("garbage.safetensors");
    std::fs::write(&garbage, b"not a safetensors file").expect("write");
    assert!(matches!(
        Classifier::load(&garbage),
        Err(ObserverError::Weights { .. })
    ));
    assert!(matches!(
        Classifier::load(&temp_path("absent.safetensors")),
        Err(ObserverError::WeightsMissing(_))
    ));
    assert!(matches!(
        observer::convert_legacy_checkpoint(&garbage, &temp_path("x.safetensors")),
        Err(ObserverError::Legacy { .. })
    ));
    let _ = std::fs::remove_dir_all(dst.parent().expect("dir"));
}

// ---------------------------------------------------------------- synsets

#[test]
fn synsets_parse() {
    let s = Synsets::parse("n01\ttench, Tinca tinca\r\nn02\tgoldfish\nn03\tgreat white shark")
        .expect("parses");
    assert_eq!(s.len(), 3);
    assert_eq!(
        (s.wnid(0), s.name(0)),
        (Some("n01"), Some("tench, Tinca tinca"))
    );
    assert_eq!(s.name(2), Some("great white shark"));
    assert_eq!(
        (s.index_of("n02"), s.index_of("n04"), s.wnid(3)),
        (Some(1), None, None)
    );
    assert_eq!(Synsets::parse("a\tb\n").expect("final newline").len(), 1);

    for (text, line) in [
        ("", 0),
        ("\n", 0),
        ("n01 tench\n", 1),
        ("n01\ttench\n\nn02\tgoldfish\n", 2),
        ("n01\ttench\nn01\tagain\n", 2),
        ("n01\t\n", 1),
        ("\ttench\n", 1),
        ("n 1\ttench\n", 1),
    ] {
        match Synsets::parse(text) {
            Err(ObserverError::Synsets { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
            other => panic!("{text:?}: expected a synsets error, got {other:?}"),
        }
    }
}

#[test]
fn synsets_real_file() {
    let path = shared("imagenet/synsets.txt");
    let s = Synsets::load(&path).expect("synsets.txt parses");
    assert_eq!(s.len(), 1000);
    assert_eq!((s.wnid(0), s.name(0)), (Some("n01440764"), Some("tench")));
    assert_eq!(s.index_of("n15075141"), Some(999));
    let mut classes = 0;
    for entry in std::fs::read_dir(shared("imagenet-dev")).expect("imagenet-dev") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        assert!(s.index_of(&name).is_some(), "{name} is not a synset");
        classes += 1;
    }
    assert_eq!(classes, 306);
}

// ---------------------------------------------------------------- preprocessing

#[test]
fn crop_windows() {
    assert_eq!(crop_window(299, 299), (19, 19, 261));
    assert_eq!(crop_window(300, 400), (19, 69, 262));
    assert_eq!(crop_window(256, 256), (16, 16, 224));
    assert_eq!(crop_window(512, 768), (32, 160, 448));
}

#[test]
fn preprocess_shapes_and_values() {
    // A constant image maps to the constant (v * 255 - 127) / 128.
    for v in [0.0f64, 0.5, 1.0] {
        let x = Tensor::full([2, 3, 300, 400], v, (Kind::Float, Device::Cpu));
        let p = preprocess(&x).expect("preprocess");
        assert_eq!(p.size(), [2, 3, 224, 224]);
        let expected = (v * 255.0 - 127.0) / 128.0;
        let (lo, hi) = (p.min().double_value(&[]), p.max().double_value(&[]));
        assert!(
            close(lo, expected, 1e-6) && close(hi, expected, 1e-6),
            "{v}: {lo}..{hi}"
        );
    }
    assert_eq!(
        normalize(&Tensor::from_slice(&[0.5f32])).double_value(&[0]),
        0.5 / 128.0
    );

    // The synthetic 300x400 image against torch.nn.functional.interpolate(bicubic, antialias)
    // in Python (observer_reference.py logits).
    let p = preprocess(&synthetic(1, 300, 400)).expect("preprocess");
    assert!(close(p.sum(Kind::Double).double_value(&[]), 420.2931, 0.01));
    assert!(close(p.double_value(&[0, 0, 0, 0]), -0.767455, 1e-5));
    assert!(close(p.double_value(&[0, 1, 100, 50]), -0.897242, 1e-5));
    assert!(close(p.double_value(&[0, 2, 223, 223]), 0.972254, 1e-5));

    // 224/256 of a 256 side is 224: crop only, the resize is the identity.
    let x = synthetic(1, 256, 256);
    let r = center_crop_resize(&x).expect("crop");
    let crop = x.narrow(2, 16, 224).narrow(3, 16, 224);
    assert!((r - crop).abs().max().double_value(&[]) < 1e-5);

    // Differentiable.
    let x = synthetic(1, 300, 400).set_requires_grad(true);
    preprocess(&x)
        .expect("preprocess")
        .sum(Kind::Float)
        .backward();
    let g = x.grad();
    assert!(g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0);

    // Inputs it cannot take.
    let f = (Kind::Float, Device::Cpu);
    for bad in [
        Tensor::zeros([3, 224, 224], f),
        Tensor::zeros([1, 1, 224, 224], f),
        Tensor::zeros([1, 3, 1, 224], f),
        Tensor::zeros([0, 3, 224, 224], f),
        Tensor::zeros([1, 3, 224, 224], (Kind::Uint8, Device::Cpu)),
    ] {
        assert!(
            matches!(preprocess(&bad), Err(ObserverError::Input(_))),
            "{:?}",
            bad.size()
        );
    }
}

// ---------------------------------------------------------------- top-k

#[test]
fn top_k_probabilities() {
    let logits = Tensor::from_slice(&[0.0f32, 2f32.ln(), 0.0, 1.0, 0.0, 0.0]).view([2, 3]);
    let top = top_k(&logits, 2).expect("top-k");
    assert_eq!(top.len(), 2);
    assert_eq!(top[0][0].0, 1);
    assert!(close(f64::from(top[0][0].1), 0.5, 1e-6));
    assert!(close(f64::from(top[0][1].1), 0.25, 1e-6));
    assert_eq!(top[1][0].0, 0);
    assert_eq!(top_k(&logits, 10).expect("capped")[0].len(), 3);
    assert!(top_k(&Tensor::from_slice(&[1.0f32, 2.0]), 1).is_err());
}

// ---------------------------------------------------------------- the network

/// Python (`observer_reference.py logits`): the synthetic 2x3x224x224 batch, normalised, no
/// crop or resize, through the reference package with the pretrained weights.
const REF_TOP5: [[i64; 5]; 2] = [[767, 418, 769, 723, 710], [418, 767, 769, 723, 710]];
const REF_TOP5_LOGITS: [[f64; 5]; 2] = [
    [9.2966, 9.0111, 6.7704, 6.1429, 5.7869],
    [9.2825, 9.0468, 6.9876, 6.1686, 5.8689],
];
const REF_FIRST_LOGITS: [[f64; 8]; 2] = [
    [
        -0.2467, 1.4874, -0.8875, -0.4404, -2.1705, 0.2804, -0.6108, 2.1485,
    ],
    [
        -0.1107, 1.3208, -0.7395, -0.2601, -2.2138, 0.2291, -0.5605, 2.0969,
    ],
];
const REF_HEAD_MEAN: f64 = 0.183281;

#[test]
fn network_matches_the_python_reference() {
    let c = classifier();
    let x = normalize(&synthetic(2, 224, 224));
    let all = FeatureLayer::all();
    let (logits, feats) = c.forward_with_features(&x, &all).expect("forward");
    assert_eq!(logits.size(), [2, 1000]);
    for n in 0..2 {
        let (values, indices) = logits.get(n as i64).topk(5, 0, true, true);
        let indices = Vec::<i64>::try_from(&indices).expect("indices");
        assert_eq!(indices, REF_TOP5[n], "image {n}");
        let values = Vec::<f64>::try_from(&values.to_kind(Kind::Double)).expect("values");
        for (k, (&v, &r)) in values.iter().zip(&REF_TOP5_LOGITS[n]).enumerate() {
            assert!(close(v, r, 2e-4), "image {n} top {k}: {v}, Python {r}");
        }
        let first =
            Vec::<f64>::try_from(&logits.get(n as i64).narrow(0, 0, 8).to_kind(Kind::Double))
                .expect("logits");
        for (k, (&v, &r)) in first.iter().zip(&REF_FIRST_LOGITS[n]).enumerate() {
            assert!(close(v, r, 2e-4), "image {n} logit {k}: {v}, Python {r}");
        }
    }
    for (l, f) in all.iter().zip(&feats) {
        let channels = l.channels().expect("channels");
        match l.stride() {
            Some(stride) => assert_eq!(f.size(), [2, channels, 224 / stride, 224 / stride], "{l}"),
            // The logits "layer" is the logits themselves.
            None => assert!(f.equal(&logits), "{l}"),
        }
    }
    let head = &feats[all
        .iter()
        .position(|l| *l == FeatureLayer::Head)
        .expect("head")];
    assert!(close(
        head.mean(Kind::Double).double_value(&[]),
        REF_HEAD_MEAN,
        1e-5
    ));

    // `features` stops early and agrees; `logits` agrees; the Observer trait uses the default
    // layers.
    let early = c.features(&x, &[FeatureLayer::Stage(1)]).expect("features");
    assert!(early[0].equal(&feats[2]));
    assert!(c
        .logits(&x)
        .expect("logits")
        .allclose(&logits, 1e-5, 1e-5, false));
    let obs = c.observe(&x).expect("observe");
    assert_eq!(obs.features.len(), c.feature_layers().len());
    assert!(c
        .forward_with_features(&x, &[FeatureLayer::Stage(NUM_STAGES)])
        .is_err());
    assert!(c
        .logits(&Tensor::zeros([1, 4, 224, 224], (Kind::Float, Device::Cpu)))
        .is_err());
}

#[test]
fn gradients_reach_the_input_not_the_weights() {
    let c = classifier();
    let images = synthetic(1, 256, 256).set_requires_grad(true);
    let (logits, feats) = c
        .forward_with_features(
            &preprocess(&images).expect("preprocess"),
            &[FeatureLayer::Stage(1)],
        )
        .expect("forward");
    (logits.sum(Kind::Float) + feats[0].square().mean(Kind::Float)).backward();
    let g = images.grad();
    assert!(g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    assert!(c.is_frozen());
}

#[test]
fn known_prediction_on_imagenet_dev() {
    let c = classifier();
    let synsets = shared("imagenet/synsets.txt");
    // An ostrich (class 9): the Python reference gives it probability 0.995 after the
    // documented preprocessing (PIL).
    let file = shared(KNOWN_IMAGE);
    let synsets = Synsets::load(&synsets).expect("synsets");
    let images = observer::load_image(&file).expect("image");
    assert_eq!(images.size(), [1, 3, 299, 299]);
    let logits = c
        .logits(&preprocess(&images).expect("preprocess"))
        .expect("logits");
    let top = top_k(&logits, 5).expect("top-k");
    let (class, p) = top[0][0];
    let wnid = KNOWN_IMAGE.split('/').nth(1).expect("wnid");
    assert_eq!(synsets.wnid(class), Some(wnid), "top-5 {:?}", top[0]);
    assert!(p > KNOWN_MIN_PROBABILITY, "probability {p}");
}

// ---------------------------------------------------------------- TorchScript observers

/// Traces `f` on a (1, 3, 224, 224) input into a TorchScript file and loads it as an observer.
/// (Tracing from Rust gives methods with one output only: a bare-logits observer.)
fn traced(name: &str, f: &mut dyn FnMut(&Tensor) -> Tensor) -> TorchScriptObserver {
    let path = temp_path(name);
    let x = Tensor::zeros([1, 3, 224, 224], (Kind::Float, Device::Cpu));
    let module = tch::CModule::create_by_tracing("Observer", "forward", &[x], &mut |inputs| {
        vec![f(&inputs[0])]
    })
    .expect("trace");
    module.save(&path).expect("save");
    let observer = TorchScriptObserver::load(&path).expect("load");
    let _ = std::fs::remove_file(&path);
    observer
}

#[test]
fn torchscript_observer_logits_only() {
    let x = normalize(&synthetic(2, 224, 224));
    let mean = |x: &Tensor| x.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
    let o = traced("toy.pt", &mut |x| mean(x) * 3.0)
        .observe(&x)
        .expect("observe");
    assert!(o.logits.allclose(&(mean(&x) * 3.0), 1e-6, 1e-6, false));
    assert!(o.features.is_empty());
    // The first output must be (N, classes) logits.
    let bad = traced("bad.pt", &mut |x| x * 2.0);
    assert!(matches!(bad.observe(&x), Err(ObserverError::Input(_))));
    assert!(matches!(
        TorchScriptObserver::load(&temp_path("absent.pt")),
        Err(ObserverError::WeightsMissing(_))
    ));
}

/// `observer_reference.py torchscript` exports the *Python reference* network as a TorchScript
/// observer returning (logits, [Stage(1), Head]) into the cache; when that file is there, the
/// native classifier's feature maps must match it.
#[test]
#[ignore = "needs the Python reference: python3 scripts/observer_reference.py torchscript (PyTorch)"]
fn torchscript_reference_matches_the_native_features() {
    let path = observer::cache_dir()
        .join("observer")
        .join(REFERENCE_TORCHSCRIPT);
    assert!(
        path.exists(),
        "{} not found: run python3 scripts/observer_reference.py torchscript",
        path.display()
    );
    let c = classifier();
    let reference = TorchScriptObserver::load(&path).expect("load");
    let x = normalize(&synthetic(2, 224, 224));
    let o = reference.observe(&x).expect("observe");
    let (logits, feats) = c
        .forward_with_features(&x, &[FeatureLayer::Stage(1), FeatureLayer::Head])
        .expect("forward");
    assert!(o.logits.allclose(&logits, 1e-3, 1e-3, false));
    assert_eq!(o.features.len(), 2);
    for (a, b) in o.features.iter().zip(&feats) {
        assert_eq!(a.size(), b.size());
        let diff = (a - b).abs().max().double_value(&[]);
        eprintln!(
            "feature map {:?}: max |native - reference| {diff:.2e}",
            a.size()
        );
        assert!(diff < 1e-3, "max |difference| {diff}");
    }
}

const REFERENCE_TORCHSCRIPT: &str = "reference_lite0.torchscript.pt";

const KNOWN_IMAGE: &str = "imagenet-dev/n01518878/014f0024918a7b6f.png";
const KNOWN_MIN_PROBABILITY: f32 = 0.9;

/// top-1 / top-5 of the Rust pipeline (load_image, preprocess, Classifier) on imagenet-dev.
/// With `OBSERVER_PY_PREDS=<file written by observer_reference.py eval --preds>` it also
/// reports how often the top-1 agrees with the Python (PIL) run.
#[test]
#[ignore = "evaluates 500 images (~1 min); run by hand, see docs/observer.md"]
fn imagenet_dev_accuracy() {
    let c = classifier();
    let (dev, synsets) = (shared("imagenet-dev"), shared("imagenet/synsets.txt"));
    let synsets = Synsets::load(&synsets).expect("synsets");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dev)
        .expect("imagenet-dev")
        .flat_map(|d| std::fs::read_dir(d.expect("dir").path()).expect("class dir"))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    let python: std::collections::HashMap<String, usize> = std::env::var("OBSERVER_PY_PREDS")
        .ok()
        .map(|p| {
            std::fs::read_to_string(p)
                .expect("python predictions")
                .lines()
                .filter_map(|l| {
                    let mut f = l.split('\t');
                    Some((
                        f.next()?.to_string(),
                        f.next()?.split(' ').next()?.parse().ok()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let start = std::time::Instant::now();
    let (mut top1, mut top5, mut agree) = (0, 0, 0);
    for chunk in files.chunks(50) {
        let batch: Vec<Tensor> = chunk
            .iter()
            .map(|f| preprocess(&observer::load_image(f).expect("image")).expect("preprocess"))
            .collect();
        let logits = tch::no_grad(|| c.logits(&Tensor::cat(&batch, 0))).expect("logits");
        for (f, top) in chunk.iter().zip(top_k(&logits, 5).expect("top-k")) {
            let wnid = f
                .parent()
                .and_then(|p| p.file_name())
                .expect("wnid")
                .to_string_lossy();
            let label = synsets.index_of(&wnid).expect("known wnid");
            top1 += usize::from(top[0].0 == label);
            top5 += usize::from(top.iter().any(|&(i, _)| i == label));
            let key = format!("{wnid}/{}", f.file_name().expect("name").to_string_lossy());
            agree += usize::from(python.get(&key) == Some(&top[0].0));
        }
    }
    let n = files.len() as f64;
    println!(
        "rust: {} images, top-1 {:.1}% ({top1}), top-5 {:.1}% ({top5}), {:.0} s",
        files.len(),
        100.0 * top1 as f64 / n,
        100.0 * top5 as f64 / n,
        start.elapsed().as_secs_f64()
    );
    if !python.is_empty() {
        println!(
            "top-1 equal to the Python (PIL) run on {agree} of {} images",
            python.len()
        );
    }
}

// ---------------------------------------------------------------- EfficientNet-Lite1

/// The converted Lite1 weights, which `make setup` installs.
///
/// # Panics
/// If they are absent (run `make setup`).
fn lite1() -> Classifier {
    variant(Variant::Lite1)
}

fn variant(variant: Variant) -> Classifier {
    let path = weights_path(variant);
    assert!(
        path.exists(),
        "{variant} weights {} not found: run `make setup` (scripts/setup-observer.sh)",
        path.display()
    );
    Classifier::load_variant(&path, variant).expect("the converted weights load")
}

/// The benchmark's view of an image for a judge of input `side`: the 224x224 classifier crop,
/// resized to `side`, normalised.
fn judged_at(images: &Tensor, side: i64) -> Tensor {
    let crop = center_crop_resize(images).expect("crop");
    normalize(&resize_square(&crop, side).expect("resize"))
}

#[test]
fn lite1_is_a_deeper_network_for_240_pixels() {
    let c = lite1();
    assert_eq!(
        (c.variant(), c.name().as_str()),
        (Variant::Lite1, "efficientnet-lite1")
    );
    assert!(c.is_frozen());
    let x = normalize(&synthetic(1, 240, 240));
    let layers = [FeatureLayer::Stage(1), FeatureLayer::Head];
    let (logits, maps) = tch::no_grad(|| c.forward_with_features(&x, &layers)).expect("forward");
    assert_eq!(logits.size(), [1, 1000]);
    assert_eq!(maps[0].size(), [1, 24, 60, 60]);
    assert_eq!(maps[1].size(), [1, 1280, 8, 8]);
    // Each network's weights fit only itself.
    let lite0 = default_weights_path();
    if lite0.exists() {
        let wrong = Classifier::load_variant(&lite0, Variant::Lite1).expect_err("Lite0 weights");
        assert!(matches!(wrong, ObserverError::Weights { .. }), "{wrong}");
    }
    let wrong = Classifier::load(&weights_path(Variant::Lite1)).expect_err("Lite1 as Lite0");
    assert!(matches!(wrong, ObserverError::Weights { .. }), "{wrong}");
}

#[test]
fn lite2_is_a_wider_network_for_260_pixels_that_knows_the_image() {
    let c = variant(Variant::Lite2);
    assert_eq!(
        (c.variant(), c.name().as_str()),
        (Variant::Lite2, "efficientnet-lite2")
    );
    assert!(c.is_frozen());
    let x = normalize(&synthetic(1, 260, 260));
    let layers = [FeatureLayer::Stage(2), FeatureLayer::Head];
    let (logits, maps) = tch::no_grad(|| c.forward_with_features(&x, &layers)).expect("forward");
    assert_eq!(logits.size(), [1, 1000]);
    // Stage 2 is 48 channels wide in Lite2 (40 in Lite0 and Lite1); the head stays 1280.
    assert_eq!(maps[0].size(), [1, 48, 33, 33]);
    assert_eq!(maps[1].size(), [1, 1280, 9, 9]);
    // Lite1 has as many tensors, of other shapes: its weights do not fit.
    let wrong =
        Classifier::load_variant(&weights_path(Variant::Lite1), Variant::Lite2).expect_err("Lite1");
    assert!(matches!(wrong, ObserverError::Weights { .. }), "{wrong}");
    let (synsets, file) = (shared("imagenet/synsets.txt"), shared(KNOWN_IMAGE));
    let synsets = Synsets::load(&synsets).expect("synsets");
    let images = observer::load_image(&file).expect("image");
    let logits = tch::no_grad(|| c.logits(&judged_at(&images, 260))).expect("logits");
    let top = top_k(&logits, 5).expect("top-k");
    let wnid = KNOWN_IMAGE.split('/').nth(1).expect("wnid");
    assert_eq!(synsets.wnid(top[0][0].0), Some(wnid), "top-5 {:?}", top[0]);
}

#[test]
fn lite1_known_prediction_on_imagenet_dev() {
    let c = lite1();
    let (synsets, file) = (shared("imagenet/synsets.txt"), shared(KNOWN_IMAGE));
    let synsets = Synsets::load(&synsets).expect("synsets");
    let images = observer::load_image(&file).expect("image");
    let logits = tch::no_grad(|| c.logits(&judged_at(&images, 240))).expect("logits");
    let top = top_k(&logits, 5).expect("top-k");
    let wnid = KNOWN_IMAGE.split('/').nth(1).expect("wnid");
    assert_eq!(synsets.wnid(top[0][0].0), Some(wnid), "top-5 {:?}", top[0]);
    assert!(top[0][0].1 > 0.5, "probability {}", top[0][0].1);
}

#[test]
#[ignore = "classifies OBSERVER_LIMIT (100) imagenet-dev images with Lite0, 1 and 2; run by hand"]
fn lite1_imagenet_dev_accuracy() {
    let judges: Vec<(Classifier, i64)> = Variant::ALL
        .into_iter()
        .map(|v| (variant(v), v.input_size()))
        .collect();
    let (dev, synsets) = (shared("imagenet-dev"), shared("imagenet/synsets.txt"));
    let limit: usize =
        std::env::var("OBSERVER_LIMIT").map_or(100, |v| v.parse().expect("OBSERVER_LIMIT"));
    let synsets = Synsets::load(&synsets).expect("synsets");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dev)
        .expect("imagenet-dev")
        .flat_map(|d| std::fs::read_dir(d.expect("dir").path()).expect("class dir"))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    files.truncate(limit);
    let start = std::time::Instant::now();
    let mut correct = [[0usize; 2]; Variant::ALL.len()]; // [network][top-1, top-5]
    for chunk in files.chunks(10) {
        let images: Vec<Tensor> = chunk
            .iter()
            .map(|f| observer::load_image(f).expect("image"))
            .collect();
        for (n, (c, side)) in judges.iter().enumerate() {
            let batch: Vec<Tensor> = images.iter().map(|i| judged_at(i, *side)).collect();
            let logits = tch::no_grad(|| c.logits(&Tensor::cat(&batch, 0))).expect("logits");
            for (f, top) in chunk.iter().zip(top_k(&logits, 5).expect("top-k")) {
                let wnid = f.parent().and_then(|p| p.file_name()).expect("wnid");
                let label = synsets
                    .index_of(&wnid.to_string_lossy())
                    .expect("known wnid");
                correct[n][0] += usize::from(top[0].0 == label);
                correct[n][1] += usize::from(top.iter().any(|&(i, _)| i == label));
            }
        }
    }
    let n = files.len() as f64;
    for (v, [top1, top5]) in Variant::ALL.iter().zip(correct) {
        let name = format!("{} ({})", v.short_name(), v.input_size());
        println!(
            "{name}: {} images, top-1 {:.1}% ({top1}), top-5 {:.1}% ({top5})",
            files.len(),
            100.0 * top1 as f64 / n,
            100.0 * top5 as f64 / n
        );
    }
    println!("{:.0} s", start.elapsed().as_secs_f64());
    for (v, [top1, _]) in Variant::ALL.iter().zip(correct) {
        assert!(top1 as f64 > 0.6 * n, "{v} top-1 is implausibly low");
    }
}
