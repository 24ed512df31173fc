// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

// Measurement of an alternative design; NoxPool does not use it.

import {NoxTest} from "./utils/NoxTest.sol";
import {InsertVerifier8} from "./bench/InsertVerifier8.sol";
import {InsertVerifier32} from "./bench/InsertVerifier32.sol";

/// @notice InsertVerifier8 behind an external function, as a pool taking a batch would call it, with the gas of the
///         verification alone. Measurement of an alternative design; NoxPool does not use it.
contract InsertVerifier8Harness {
    function verify(uint256[8] calldata proof, uint256[11] calldata input)
        external
        view
        returns (bool ok, uint256 gasUsed)
    {
        uint256 g = gasleft();
        ok = InsertVerifier8.verify(proof, input);
        gasUsed = g - gasleft();
    }
}

/// @notice The same for InsertVerifier32. Measurement of an alternative design; NoxPool does not use it.
contract InsertVerifier32Harness {
    function verify(uint256[8] calldata proof, uint256[35] calldata input)
        external
        view
        returns (bool ok, uint256 gasUsed)
    {
        uint256 g = gasleft();
        ok = InsertVerifier32.verify(proof, input);
        gasUsed = g - gasleft();
    }
}

/// @notice Gas of inserting a batch of leaves with a Groth16 proof (nox_circuits::insert) instead of hashing on
///         chain. Measurement of an alternative design; NoxPool does not use it. The verifiers under bench/ and the
///         proofs in fixtures/insert_b*.json are written by
///         `cargo run --release -p nox-circuits --example insert_proof_cost`.
contract InsertProofGasTest is NoxTest {
    /// @dev Writing the new root into a fresh word (20,000 + 2,100 cold).
    uint256 internal constant ROOT_STORAGE_GAS = 22_100;
    /// @dev The rest of a batch's bookkeeping: the next index, an event (~5,000).
    uint256 internal constant BOOKKEEPING_GAS = 5_000;

    function _fixture(uint256 batch, uint256 inputs)
        internal
        view
        returns (uint256[] memory proof, uint256[] memory input)
    {
        string memory json = vm.readFile(
            string.concat(vm.projectRoot(), "/contracts/test/fixtures/insert_b", vm.toString(batch), ".json")
        );
        proof = vm.parseJsonUintArray(json, ".proof");
        input = vm.parseJsonUintArray(json, ".inputs");
        vm.assertEq(proof.length, 8, "proof words");
        vm.assertEq(input.length, inputs, "public inputs");
    }

    /// @dev EIP-2028: 16 gas per non-zero byte, 4 per zero byte.
    function _calldataGas(bytes memory data) internal pure returns (uint256 gas) {
        for (uint256 i = 0; i < data.length; ++i) {
            gas += data[i] == 0 ? 4 : 16;
        }
    }

    /// @dev Logs `insert_b<B> verify_gas=… calldata_gas=… per_leaf_gas=…`, where a leaf's share is
    ///      (verification + calldata + the new root's storage + bookkeeping) / B.
    function _report(uint256 batch, uint256 verifyGas, bytes memory data) internal view {
        uint256 calldataGas = _calldataGas(data);
        uint256 perLeaf = (verifyGas + calldataGas + ROOT_STORAGE_GAS + BOOKKEEPING_GAS) / batch;
        log(
            string.concat(
                "insert_b",
                vm.toString(batch),
                " verify_gas=",
                vm.toString(verifyGas),
                " calldata_gas=",
                vm.toString(calldataGas),
                " per_leaf_gas=",
                vm.toString(perLeaf)
            )
        );
    }

    function _batch8() internal view returns (uint256[8] memory proof, uint256[11] memory input) {
        (uint256[] memory p, uint256[] memory x) = _fixture(8, 11);
        for (uint256 i = 0; i < 8; ++i) {
            proof[i] = p[i];
        }
        for (uint256 i = 0; i < 11; ++i) {
            input[i] = x[i];
        }
    }

    function _batch32() internal view returns (uint256[8] memory proof, uint256[35] memory input) {
        (uint256[] memory p, uint256[] memory x) = _fixture(32, 35);
        for (uint256 i = 0; i < 8; ++i) {
            proof[i] = p[i];
        }
        for (uint256 i = 0; i < 35; ++i) {
            input[i] = x[i];
        }
    }

    function test_gas_batch_of_8() public {
        InsertVerifier8Harness h = new InsertVerifier8Harness();
        (uint256[8] memory proof, uint256[11] memory input) = _batch8();
        (bool ok, uint256 gasUsed) = h.verify(proof, input);
        vm.assertTrue(ok, "the Rust prover's proof verifies");
        _report(8, gasUsed, abi.encodeCall(h.verify, (proof, input)));
        vm.assertLe(gasUsed, 260_000, "verification gas of a batch of 8");

        input[1] -= 1;
        (ok,) = h.verify(proof, input);
        vm.assertFalse(ok, "another new root is refused");
        input[1] += 1;
        input[7] -= 1;
        (ok,) = h.verify(proof, input);
        vm.assertFalse(ok, "another leaf is refused");
    }

    function test_gas_batch_of_32() public {
        InsertVerifier32Harness h = new InsertVerifier32Harness();
        (uint256[8] memory proof, uint256[35] memory input) = _batch32();
        (bool ok, uint256 gasUsed) = h.verify(proof, input);
        vm.assertTrue(ok, "the Rust prover's proof verifies");
        _report(32, gasUsed, abi.encodeCall(h.verify, (proof, input)));
        vm.assertLe(gasUsed, 420_000, "verification gas of a batch of 32");

        input[1] -= 1;
        (ok,) = h.verify(proof, input);
        vm.assertFalse(ok, "another new root is refused");
        input[1] += 1;
        input[2] += 32;
        (ok,) = h.verify(proof, input);
        vm.assertFalse(ok, "another start index is refused");
    }

    function test_RevertWhen_an_input_is_out_of_field() public {
        InsertVerifier8Harness h = new InsertVerifier8Harness();
        (uint256[8] memory proof, uint256[11] memory input) = _batch8();
        input[4] = InsertVerifier8.SCALAR_MODULUS;
        vm.expectRevert(abi.encodeWithSelector(InsertVerifier8.InputOutOfField.selector, 4));
        h.verify(proof, input);
    }
}
