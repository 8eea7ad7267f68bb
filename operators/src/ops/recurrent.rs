//! Recurrent layers: `lstm`, whose hidden and cell state are node states, so that a
//! sequence fed in pieces (a recording in chunks of windows) continues where the last
//! run stopped until the caller resets the session's states.

use super::f32_input;
use amanuensis_kernels::cpu;
use amanuensis_runtime::format::Dim;
use amanuensis_runtime::op::{
    expect_inputs, expect_same_dim, Attrs, EvalContext, OpDef, Operator, ValueType,
};
use amanuensis_runtime::{DType, OpError, Tensor};

/// One forward LSTM layer with ONNX's semantics and gate order (i, o, f, c).
pub struct LstmDef;
#[derive(Debug)]
struct Lstm;

impl OpDef for LstmDef {
    fn name(&self) -> &str {
        "lstm"
    }
    fn summary(&self) -> &str {
        "y[seq, hidden] = LSTM(x[seq, input]; w_ih[4h, input], w_hh[4h, h], b[8h]), gates i, o, f, c; states h[hidden], c[hidden] carried between runs"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&[])?;
        Ok(Box::new(Lstm))
    }
}

/// `4 × hidden` as a dim, for the shape checks.
fn times(d: &Dim, k: usize) -> Dim {
    match d {
        Dim::Known(n) => Dim::Known(n * k),
        Dim::Sym(s) => Dim::Sym(format!("{k}*{s}")),
    }
}

impl Operator for Lstm {
    fn infer(&self, inputs: &[ValueType], states: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        expect_inputs(inputs, &["x", "w_ih", "w_hh", "b"])?;
        expect_inputs(states, &["h", "c"])?;
        for (t, n) in inputs.iter().zip(["x", "w_ih", "w_hh", "b"]) {
            t.expect_dtype(DType::F32, n)?;
        }
        let (x, w_ih, w_hh, b) = (&inputs[0], &inputs[1], &inputs[2], &inputs[3]);
        x.expect_rank(2, "x")?;
        w_ih.expect_rank(2, "w_ih")?;
        w_hh.expect_rank(2, "w_hh")?;
        b.expect_rank(1, "b")?;
        for (s, n) in states.iter().zip(["h", "c"]) {
            s.expect_dtype(DType::F32, n)?;
            s.expect_rank(1, n)?;
        }
        let hidden = &states[0].shape[0];
        expect_same_dim(&states[1].shape[0], hidden, "c's size vs h's")?;
        expect_same_dim(&w_ih.shape[1], &x.shape[1], "w_ih's input dim vs x's")?;
        expect_same_dim(
            &w_ih.shape[0],
            &times(hidden, 4),
            "w_ih's rows vs 4 × hidden",
        )?;
        expect_same_dim(
            &w_hh.shape[0],
            &times(hidden, 4),
            "w_hh's rows vs 4 × hidden",
        )?;
        expect_same_dim(&w_hh.shape[1], hidden, "w_hh's columns vs hidden")?;
        expect_same_dim(&b.shape[0], &times(hidden, 8), "b's length vs 8 × hidden")?;
        Ok(vec![ValueType::new(
            DType::F32,
            vec![x.shape[0].clone(), hidden.clone()],
        )])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let (x, w_ih, w_hh, b) = (inputs[0], inputs[1], inputs[2], inputs[3]);
        let &[seq, input] = x.shape() else {
            return Err(OpError(format!(
                "x is {:?}, expected [seq, input]",
                x.shape()
            )));
        };
        let hidden = ctx.states().first().map_or(0, |h| h.numel());
        let want: [(&Tensor, &str, Vec<usize>); 3] = [
            (w_ih, "w_ih", vec![4 * hidden, input]),
            (w_hh, "w_hh", vec![4 * hidden, hidden]),
            (b, "b", vec![8 * hidden]),
        ];
        for (t, n, shape) in want {
            if t.shape() != shape.as_slice() {
                return Err(OpError(format!(
                    "{n} is {:?}, expected {shape:?} for hidden size {hidden}",
                    t.shape()
                )));
            }
        }
        let states = ctx.states();
        if states.len() != 2 || states[1].shape() != [hidden] {
            return Err(OpError(format!(
                "states are {:?}, expected h and c of [{hidden}] (were states reset?)",
                states
                    .iter()
                    .map(|s| s.shape().to_vec())
                    .collect::<Vec<_>>()
            )));
        }
        let (xv, wi, wh, bv) = (
            f32_input(x, "x")?,
            f32_input(w_ih, "w_ih")?,
            f32_input(w_hh, "w_hh")?,
            f32_input(b, "b")?,
        );
        let mut out = ctx.alloc_f32(&[seq, hidden]);
        let (h, c) = ctx.states().split_at_mut(1);
        cpu::lstm(
            &xv,
            seq,
            input,
            &wi,
            &wh,
            &bv,
            h[0].f32s_mut()?,
            c[0].f32s_mut()?,
            out.f32s_mut()?,
        );
        Ok(vec![out])
    }
}
