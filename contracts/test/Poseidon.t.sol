// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {NoxTest} from "./utils/NoxTest.sol";
import {PoseidonT3} from "../src/generated/PoseidonT3.sol";
import {PoseidonT4} from "../src/generated/PoseidonT4.sol";

/// @notice The generated Poseidon libraries against circomlib's published outputs
///         and against the Rust implementation (`nox-zk poseidon`, through ffi:
///         run `cargo build -p nox-circuits --bin nox-zk` first).
contract PoseidonTest is NoxTest {
    /// @dev Gas a caller spends on one hash, library call included (warm).
    ///      Before the sparse partial rounds: 26,900 (T3) and 38,425 (T4).
    uint256 internal constant T3_GAS_CEILING = 13_500;
    uint256 internal constant T4_GAS_CEILING = 17_700;

    function test_t3_matches_circomlib() public pure {
        vm.assertEq(
            PoseidonT3.hash(1, 2), 0x115cc0f5e7d690413df64c6b9662e9cf2a3617f2743245519e19607a4417189a, "Poseidon(1, 2)"
        );
    }

    function test_t4_matches_circomlib() public pure {
        vm.assertEq(
            PoseidonT4.hash(1, 2, 3),
            0x0e7732d89e6939c0ff03d5e58dab6302f3230e269dc5b968f725df34ab36d732,
            "Poseidon(1, 2, 3)"
        );
    }

    /// @dev Reduced results for inputs near the modulus (the lazy reduction must not wrap).
    function test_outputs_are_reduced() public pure {
        uint256 f = PoseidonT3.F;
        vm.assertLe(PoseidonT3.hash(f - 1, f - 1), f - 1, "T3 output in field");
        vm.assertLe(PoseidonT4.hash(f - 1, f - 1, f - 1), f - 1, "T4 output in field");
    }

    function test_edge_inputs_match_rust() public {
        uint256 top = PoseidonT3.F - 1;
        vm.assertEq(PoseidonT3.hash(top, top), _rust(top, top), "T3(F - 1, F - 1)");
        vm.assertEq(PoseidonT3.hash(0, 0), _rust(0, 0), "T3(0, 0)");
        vm.assertEq(PoseidonT3.hash(0, top), _rust(0, top), "T3(0, F - 1)");
        vm.assertEq(PoseidonT4.hash(top, top, top), _rust(top, top, top), "T4(F - 1, F - 1, F - 1)");
        vm.assertEq(PoseidonT4.hash(0, 0, 0), _rust(0, 0, 0), "T4(0, 0, 0)");
        vm.assertEq(PoseidonT4.hash(top, 0, top), _rust(top, 0, top), "T4(F - 1, 0, F - 1)");
    }

    /// forge-config: default.fuzz.runs = 256
    function testFuzz_t3_matches_rust(uint256 a, uint256 b) public {
        a = bound(a, 0, PoseidonT3.F - 1);
        b = bound(b, 0, PoseidonT3.F - 1);
        vm.assertEq(PoseidonT3.hash(a, b), _rust(a, b), "PoseidonT3 = Rust");
    }

    /// forge-config: default.fuzz.runs = 256
    function testFuzz_t4_matches_rust(uint256 a, uint256 b, uint256 c) public {
        a = bound(a, 0, PoseidonT4.F - 1);
        b = bound(b, 0, PoseidonT4.F - 1);
        c = bound(c, 0, PoseidonT4.F - 1);
        vm.assertEq(PoseidonT4.hash(a, b, c), _rust(a, b, c), "PoseidonT4 = Rust");
    }

    /// @dev Prints the gas of one hash of each width and keeps it under its ceiling.
    function test_gas_per_hash() public view {
        PoseidonT3.hash(1, 2); // the libraries' addresses warm, as in a pool's insertion
        PoseidonT4.hash(1, 2, 3);
        uint256 before = gasleft();
        PoseidonT3.hash(3, 4);
        uint256 t3 = before - gasleft();
        before = gasleft();
        PoseidonT4.hash(3, 4, 5);
        uint256 t4 = before - gasleft();
        log(string.concat("gas per hash: PoseidonT3 ", vm.toString(t3), ", PoseidonT4 ", vm.toString(t4)));
        vm.assertLe(t3, T3_GAS_CEILING, "PoseidonT3 gas");
        vm.assertLe(t4, T4_GAS_CEILING, "PoseidonT4 gas");
    }

    function _rust(uint256 a, uint256 b) internal returns (uint256) {
        uint256[] memory inputs = new uint256[](2);
        (inputs[0], inputs[1]) = (a, b);
        return _rust(inputs);
    }

    function _rust(uint256 a, uint256 b, uint256 c) internal returns (uint256) {
        uint256[] memory inputs = new uint256[](3);
        (inputs[0], inputs[1], inputs[2]) = (a, b, c);
        return _rust(inputs);
    }

    /// @dev `nox-zk poseidon` of the inputs, in hex.
    function _rust(uint256[] memory inputs) internal returns (uint256) {
        string[] memory cmd = new string[](inputs.length + 2);
        cmd[0] = "target/debug/nox-zk";
        cmd[1] = "poseidon";
        for (uint256 i; i < inputs.length; ++i) {
            cmd[i + 2] = vm.toString(bytes32(inputs[i]));
        }
        return uint256(bytes32(vm.ffi(cmd)));
    }
}
